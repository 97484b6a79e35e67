"""Downloading torchvision's weight files, the way users get them, from a server on 127.0.0.1.

The test starts an ``http.server`` serving state dicts made here; the weights enums' URLs are pointed at it
(or MULTIBOX_WEIGHTS_MIRROR is, for the console script), and TORCH_HOME is a tmp folder. The download is
torch hub's real code: hash prefix in the file name checked, file moved into the cache when complete.
"""

import hashlib
import http.server
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from cli_runner import run_cli
from torchvision.models import MobileNet_V3_Large_Weights, mobilenet_v3_large
from torchvision.models.detection import SSDLite320_MobileNet_V3_Large_Weights
from torchvision.models.detection import ssdlite320_mobilenet_v3_large as torchvision_ssdlite

from multibox.config import load_config
from multibox.data.synth import make_synthetic_dataset
from multibox.errors import MultiboxError
from multibox.models.detector import build_detector
from multibox.models.mobilenet_v3 import default_norm_layer
from multibox.models.weights import resolve_pretrained_fallback


class _Server:
    """A folder served on 127.0.0.1, counting the requests of each path."""

    def __init__(self, folder: Path) -> None:
        self.requests: list[str] = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(folder), **kwargs)

            def do_GET(self):  # noqa: N802 (http.server's name)
                server.requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[tuple[_Server, Path]]:
    folder = tmp_path_factory.mktemp("served")
    server = _Server(folder)
    yield server, folder
    server.close()


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    monkeypatch.delenv("MULTIBOX_OFFLINE", raising=False)
    monkeypatch.delenv("MULTIBOX_WEIGHTS_MIRROR", raising=False)
    return tmp_path / "torch" / "hub" / "checkpoints"


def _publish(folder: Path, stem: str, state: dict[str, torch.Tensor]) -> str:
    """Save ``state`` as ``<stem>-<sha256 prefix>.pth``, torchvision's naming that torch hub checks."""
    scratch = folder / f"{stem}.tmp"
    torch.save(state, scratch)
    digest = hashlib.sha256(scratch.read_bytes()).hexdigest()[:8]
    name = f"{stem}-{digest}.pth"
    scratch.rename(folder / name)
    return name


def _randomised(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    state = module.state_dict()
    return {k: (torch.randn_like(v) if v.is_floating_point() else v) for k, v in state.items()}


def test_imagenet_backbone_is_downloaded_once_into_torch_hubs_cache(served, torch_home, monkeypatch) -> None:
    server, folder = served
    classifier = mobilenet_v3_large(weights=None, reduced_tail=False, norm_layer=default_norm_layer())
    state = _randomised(classifier)
    name = _publish(folder, "mobilenet_v3_large", state)
    monkeypatch.setattr(MobileNet_V3_Large_Weights.IMAGENET1K_V1.value, "url", f"{server.url}/{name}")
    config = load_config(
        None,
        [
            "model.name=custom",
            "model.backbone=mobilenet_v3_large",
            "model.strides=[8,16,32]",
            "anchors.box_sizes=[[16],[32],[48]]",
            "data.input_size=[64,64]",
            "model.backbone_weights=imagenet",
        ],
    )
    before = len(server.requests)

    detector, _ = build_detector(config, num_classes=3)
    assert (torch_home / name).is_file()
    stem = detector.model.backbone.state_dict()
    assert torch.equal(stem["stages.0.0.0.weight"], state["features.0.0.weight"])
    build_detector(config, num_classes=3)  # the second run reads the cache
    assert server.requests[before:] == [f"/{name}"]


def test_coco_ssdlite_by_name_reinitialises_the_class_head_and_says_so(served, torch_home, monkeypatch, caplog) -> None:
    server, folder = served
    state = _randomised(torchvision_ssdlite(weights=None, weights_backbone=None, num_classes=91))
    name = _publish(folder, "ssdlite320_mobilenet_v3_large_coco", state)
    monkeypatch.setattr(SSDLite320_MobileNet_V3_Large_Weights.COCO_V1.value, "url", f"{server.url}/{name}")
    config = load_config(
        None,
        [
            "model.name=ssdlite320_mobilenet_v3_large",
            "data.input_size=[128,128]",
            "model.weights=torchvision:SSDLite320_MobileNet_V3_Large_Weights.COCO_V1",
        ],
    )

    with caplog.at_level("WARNING", logger="multibox.models.weights"):
        detector, _ = build_detector(config, num_classes=4)
    model = detector.model.state_dict()
    assert torch.equal(model["backbone.features.0.0.0.weight"], state["backbone.features.0.0.0.weight"])
    assert torch.equal(
        model["head.regression_head.module_list.0.1.weight"], state["head.regression_head.module_list.0.1.weight"]
    )
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "re-initialised" in warning and "91 classes" in warning and "5" in warning, warning
    assert (torch_home / name).is_file()


def test_torchvision_weights_of_another_model_or_unknown_names_are_refused(torch_home) -> None:
    for spec, expected in (
        ("torchvision:SSD300_VGG16_Weights.COCO_V1", "model.name=ssd300_vgg16"),
        ("torchvision:SSD300_VGG16_Weights.COCO_V9", "COCO_V1"),
        ("torchvision:FasterRCNN_ResNet50_FPN_Weights.COCO_V1", "SSD300_VGG16_Weights.COCO_V1"),
    ):
        config = load_config(
            None, ["model.name=ssdlite320_mobilenet_v3_large", "data.input_size=[128,128]", f"model.weights={spec}"]
        )
        with pytest.raises(MultiboxError, match=expected.replace(".", r"\.")):
            build_detector(config, num_classes=2)
    assert not torch_home.exists()  # nothing was fetched


def test_a_file_whose_hash_does_not_match_is_not_kept(served, torch_home, monkeypatch) -> None:
    server, folder = served
    (folder / "mobilenet_v3_large-00000000.pth").write_bytes(b"not the published file")
    monkeypatch.setattr(
        MobileNet_V3_Large_Weights.IMAGENET1K_V1.value, "url", f"{server.url}/mobilenet_v3_large-00000000.pth"
    )
    config = load_config(
        None,
        ["model.name=ssdlite320_mobilenet_v3_large", "data.input_size=[128,128]", "model.backbone_weights=imagenet"],
    )
    with pytest.raises(MultiboxError) as excinfo:
        build_detector(config, num_classes=2)
    assert "hash" in str(excinfo.value) and "\n" not in str(excinfo.value)
    assert not any(torch_home.iterdir())


def test_pretrained_fallback_scratch_says_so_and_goes_on(torch_home, monkeypatch, caplog) -> None:
    monkeypatch.setenv("MULTIBOX_OFFLINE", "1")
    config = load_config(
        None,
        [
            "model.name=ssdlite320_mobilenet_v3_large",
            "data.input_size=[128,128]",
            "model.backbone_weights=imagenet",
            "model.pretrained_fallback=scratch",
        ],
    )
    with caplog.at_level("WARNING", logger="multibox.models.weights"):
        build_detector(config, num_classes=2)
    assert "training from scratch" in caplog.text and "MULTIBOX_OFFLINE" in caplog.text


def test_fallback_is_decided_before_the_build_and_the_config_says_what_was_trained(
    served, torch_home, monkeypatch, caplog
) -> None:
    """custom_data.yaml's path: imagenet with pretrained_fallback=scratch and scratch_width_mult. Offline, the run's
    model config becomes backbone_weights none at width 0.5 (so config.yaml and the checkpoint rebuild the trained
    network); with the file to be had, it is downloaded and nothing changes."""
    overrides = [
        "model.name=custom",
        "model.backbone=mobilenet_v3_large",
        "model.backbone_weights=imagenet",
        "model.pretrained_fallback=scratch",
        "model.scratch_width_mult=0.5",
    ]
    config = load_config(None, overrides).model
    monkeypatch.setenv("MULTIBOX_OFFLINE", "1")
    with caplog.at_level("WARNING", logger="multibox.models.weights"):
        offline = resolve_pretrained_fallback(config)
    assert offline.backbone_weights is None and offline.width_mult == 0.5
    assert "MULTIBOX_OFFLINE" in caplog.text and "model.width_mult=0.5" in caplog.text
    assert config.backbone_weights == "imagenet" and config.width_mult == 1.0  # the user's config is not changed

    monkeypatch.delenv("MULTIBOX_OFFLINE")
    server, folder = served
    name = _publish(folder, "mobilenet_v3_large_fallback", {"features.0.0.weight": torch.zeros(1)})
    monkeypatch.setattr(MobileNet_V3_Large_Weights.IMAGENET1K_V1.value, "url", f"{server.url}/{name}")
    assert resolve_pretrained_fallback(config) == config
    assert (torch_home / name).is_file()


def _multibox(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """The command line in-process (tests/cli_runner.py) with ``env`` set, and MULTIBOX_OFFLINE only if given."""
    env.setdefault("MULTIBOX_OFFLINE", "")
    return run_cli(*args, cwd=cwd, env=env)


def test_console_offline_and_mirror(served, tmp_path) -> None:
    """The command line (training loads the weights; `summary` never does): offline, one line with the URL and
    the cache path, exit 2; with a mirror, the file is fetched from it and its hash checked (this mirror's copy is
    wrong: exit 2, nothing kept)."""
    server, folder = served
    make_synthetic_dataset(tmp_path / "run" / "shapes", 2, (64, 64))
    (tmp_path / "run" / "config.yaml").write_text(
        "model: {name: ssdlite320_mobilenet_v3_large, backbone_weights: imagenet}\n"
        "data: {input_size: [128, 128], num_workers: 0,\n"
        "       train: {images: shapes/images, annotations: shapes/annotations.json}}\n"
        "train: {epochs: 1, output_dir: out}\n"
    )
    home = tmp_path / "torch"
    cache = home / "hub" / "checkpoints" / "mobilenet_v3_large-8738ca79.pth"

    offline = _multibox(["train", "-c", "config.yaml"], tmp_path / "run", TORCH_HOME=str(home), MULTIBOX_OFFLINE="1")
    assert offline.returncode == 2, offline.stderr
    lines = offline.stderr.strip().splitlines()
    assert len(lines) == 1 and "https://download.pytorch.org/models/mobilenet_v3_large-8738ca79.pth" in lines[0]
    assert str(cache) in lines[0]

    (folder / "mobilenet_v3_large-8738ca79.pth").write_bytes(b"a stale mirror copy")
    mirrored = _multibox(
        ["train", "-c", "config.yaml"],
        tmp_path / "run",
        TORCH_HOME=str(home),
        MULTIBOX_WEIGHTS_MIRROR=f"{server.url}/",
    )
    assert mirrored.returncode == 2, mirrored.stderr
    assert "/mobilenet_v3_large-8738ca79.pth" in server.requests
    assert "error: model.backbone_weights=imagenet:" in mirrored.stderr and "hash" in mirrored.stderr
    assert not cache.exists()
