"""The paper/torchvision recipe configs, as a user runs them: `multibox summary`, then one training step.

Each config is copied as it ships into a folder with tiny data (VOC with a difficult box for the VOC recipes,
COCO for SSDLite); only the data paths, the run's size (1 epoch of 2 images) and the ImageNet download
(model.backbone_weights=none: tests never reach the internet) are overridden. The model, its anchors, the
optimizer, schedule and eval.metric are the config's. Run from the config's folder with relative paths.
"""

import json
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
from cli_runner import run_cli

from multibox.config import load_config
from multibox.data.synth import make_synthetic_dataset

CONFIGS = Path(__file__).resolve().parents[2] / "multibox" / "configs"
VOC_OBJECT = """<object><name>{name}</name><difficult>{difficult}</difficult>
<bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"""


def _voc_root(root: Path) -> None:
    """Two 64x48 images: a cat and a difficult dog, a person (VOC class names), in the recipes' split names:
    trainval names the first (one image: a VGG16 step at 300 px is the costliest part), test both."""
    (root / "ImageSets" / "Main").mkdir(parents=True)
    for split, stems in (("trainval", "a\n"), ("test", "a\nb\n")):
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text(stems)
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    rng = np.random.default_rng(0)
    objects = {"a": [("cat", 0, (5, 5, 30, 30)), ("dog", 1, (35, 10, 60, 40))], "b": [("person", 0, (10, 8, 40, 46))]}
    for stem, items in objects.items():
        image = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
        for _, _, (x0, y0, x1, y1) in items:
            image[y0:y1, x0:x1] = (200, 40, 40)
        cv2.imwrite(str(root / "JPEGImages" / f"{stem}.jpg"), image)
        xml = "".join(VOC_OBJECT.format(name=n, difficult=d, x0=b[0], y0=b[1], x1=b[2], y1=b[3]) for n, d, b in items)
        (root / "Annotations" / f"{stem}.xml").write_text(
            f"<annotation><filename>{stem}.jpg</filename><size><width>64</width><height>48</height></size>{xml}</annotation>"
        )


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("recipes")
    _voc_root(folder / "voc")
    make_synthetic_dataset(folder / "coco", num_images=2, size=(48, 64), seed=0)
    return folder


def _multibox(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return run_cli(*args, cwd=cwd)  # in-process: tests/cli_runner.py


DATA = {
    "voc": [
        "data.train.images=voc",
        "data.train.annotations=trainval",
        "data.val.images=voc",
        "data.val.annotations=test",
    ],
    "coco": [
        "data.train.images=coco/images",
        "data.train.annotations=coco/annotations.json",
        "data.val.images=coco/images",
        "data.val.annotations=coco/annotations.json",
    ],
}


@pytest.mark.parametrize(
    ("config", "data", "size", "eval_size"),
    [
        ("ssd300_vgg16_voc0712.yaml", "voc", [], "[268,300]"),
        # SSD512: all 7 levels at 0.4x the cost; its report is drawn as SSD300's is
        ("ssd512_vgg16_voc0712.yaml", "voc", ["data.input_size=[320,320]", "train.report=false"], "[300,268]"),
        ("ssdlite320_mobilenet_v3_large_coco.yaml", "coco", [], None),
    ],
)
def test_recipe_summary_and_one_training_step(work, config, data, size, eval_size) -> None:
    """Then, for the VGG16 models, `eval` at a non-square size that is neither the training size nor the model's
    default: the default boxes follow the config's size (issue 13, item 2)."""
    shutil.copy(CONFIGS / config, work / config)
    no_download = ["model.backbone_weights=none"]
    summary = _multibox(["summary", "-c", config, *no_download, *size], cwd=work)
    assert summary.returncode == 0, summary.stderr
    assert "total" in summary.stdout

    run = f"run-{Path(config).stem}"
    overrides = [
        *DATA[data],
        *no_download,
        *size,
        "train.epochs=1",
        "data.batch_size=2",
        "data.num_workers=0",
        "train.devices=1",
        "train.progress=false",
        f"train.output_dir={run}",
    ]
    train = _multibox(["train", "-c", config, *overrides], cwd=work)
    assert train.returncode == 0, train.stderr[-3000:]
    assert "No artists with labels" not in train.stderr
    metrics = json.loads((work / run / "metrics.json").read_text())
    steps = [line for line in (work / run / "metrics.csv").read_text().splitlines()[1:] if line.strip()]
    assert steps, "no training step was logged"
    saved = (work / run / "config.yaml").read_text()
    original = (CONFIGS / config).read_text()
    for key in ("name: ssd300_vgg16", "name: ssd512_vgg16", "name: ssdlite320_mobilenet_v3_large"):
        assert (key in saved) == (key in original)
    if data == "voc":  # the paper's metric beside COCO's; the difficult dog counts nowhere
        assert "voc_map" in metrics and "map" in metrics
        assert set(metrics["voc_per_class"]) <= {"cat", "person"}
    if eval_size:
        best = f"{run}/checkpoints/last.ckpt"  # no best.ckpt: the recipe validates every 10th epoch
        evaluated = _multibox(
            ["eval", "--weights", best, "-c", config, *DATA[data], "data.num_workers=0"]
            + [f"data.input_size={eval_size}", "--out", "e.json"],
            cwd=work,
        )
        assert evaluated.returncode == 0, evaluated.stderr[-3000:]
        assert 0.0 <= json.loads((work / "e.json").read_text())["map_50"] <= 1.0


def test_custom_data_config_trains_as_the_readme_runs_it(work, caplog) -> None:
    """README, "Train on your own data": custom_data.yaml with only the data paths (and a short run on these 48x64
    images), where the ImageNet file cannot be had: one line says so, the run trains from scratch at width 0.5 and
    config.yaml says so; the input size follows the images' aspect ratio, anchors are fitted."""
    shutil.copy(CONFIGS / "custom_data.yaml", work / "custom_data.yaml")
    overrides = [
        *DATA["coco"],
        "data.input_short_side=48",
        "data.num_workers=0",
        "data.batch_size=2",
        "train.epochs=1",
        "train.progress=false",
        "train.output_dir=run-custom",
    ]
    with caplog.at_level("WARNING", logger="multibox.models.weights"):  # the console prints it as one line
        train = run_cli("train", "-c", "custom_data.yaml", *overrides, cwd=work, env={"MULTIBOX_OFFLINE": "1"})
    assert train.returncode == 0, train.stderr[-3000:]
    assert "training from scratch at model.width_mult=0.5" in caplog.text
    saved = load_config(work / "run-custom" / "config.yaml")  # as resolved: the size, the fitted boxes, the width
    assert saved.model.width_mult == 0.5 and saved.model.backbone_weights is None
    assert saved.data.input_size == (48, 64) and saved.data.input_short_side is None  # 3:4 images
    assert not saved.anchors.auto and saved.anchors.box_sizes != [[16, 24], [32, 48], [64, 96]]
    assert json.loads((work / "run-custom" / "metrics.json").read_text())["per_class"]
