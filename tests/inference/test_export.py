"""Exported ONNX / TorchScript detectors give PyTorch's boxes and scores, with and without NMS."""

from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from multibox.cli import main
from multibox.config import load_config
from multibox.engine.checkpoint import load_checkpoint
from multibox.inference.export import (
    Parity,
    check_parity,
    compare_detections,
    export_checkpoint,
    sample_images,
)
from multibox.models.detector import build_detector

LITE = ["model.name=ssdlite320_mobilenet_v3_large", "model.width_mult=0.25", "data.input_size=[128,128]"]
VGG = ["model.name=ssd300_vgg16", "data.input_size=[272,272]"]  # 257 px is VGG-SSD's smallest input


def spread_scores(detector: torch.nn.Module, input_size: tuple[int, int]) -> None:
    """Random init leaves eval-mode outputs near zero and every score tied; He init, BatchNorm
    statistics of one random batch and logits scaled to std ~2 give each box its own score
    (and offsets scaled to std ~1, as a trained model's)."""
    with torch.no_grad():
        for module in detector.modules():
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight, mode="fan_out")
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.momentum = None  # a cumulative average: one batch sets the statistics
        has_norm = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in detector.modules())
        images = torch.rand(2 if has_norm else 1, 3, *input_size)  # BatchNorm needs 2 at its 1×1 levels
        if has_norm:
            detector.train()(images)
        detector.eval()
        offsets, logits = detector(images)
        head = detector.model.head
        for levels, scale in (
            (head.classification_head.module_list, 2.0 / logits.std()),
            (head.regression_head.module_list, 1.0 / offsets.std()),
        ):  # trained offsets are ~N(0, 1)
            for level in levels:
                last = [m for m in level.modules() if isinstance(m, torch.nn.Conv2d)][-1]
                last.weight *= scale
                last.bias *= scale


def make_checkpoint(path: Path, overrides: list[str], num_classes: int = 3) -> Path:
    """A multibox checkpoint of a random-init detector with distinct scores, as training writes it."""
    config = load_config(None, overrides)
    detector, _ = build_detector(config, num_classes)
    spread_scores(detector, tuple(config.data.input_size))
    hparams = {
        "config": config.to_dict(),
        "class_names": [f"class{i}" for i in range(num_classes)],
        "category_ids": list(range(1, num_classes + 1)),
    }
    torch.save(
        {"hyper_parameters": hparams, "state_dict": {"detector." + k: v for k, v in detector.state_dict().items()}},
        path,
    )
    return path


@contextmanager
def _one_thread():
    """The `one_thread` fixture for module-scoped fixtures: two spinning OpenMP threads on the
    loaded 2-core machine make a forward pass 10-50x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def lite_checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    with _one_thread():
        return make_checkpoint(tmp_path_factory.mktemp("lite") / "lite.ckpt", LITE)


@pytest.fixture(scope="module")
def vgg_checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    with _one_thread():
        return make_checkpoint(tmp_path_factory.mktemp("vgg") / "vgg.ckpt", VGG + ["eval.max_detections=100"])


def _assert_parity(result, nms: bool) -> None:
    for parity in result.checks.values():
        assert parity.box_diff < 1e-4 and parity.score_diff < 1e-4 and parity.mismatched == 0
        assert parity.detections > (20 if nms else 500)  # the comparison is not vacuous


@pytest.mark.parametrize("nms", [False, True])
def test_ssdlite_onnx_matches_pytorch_with_dynamic_batch(lite_checkpoint, one_thread, nms):
    result = export_checkpoint(
        lite_checkpoint, "onnx", lite_checkpoint.with_suffix(f".{nms}.onnx"), nms=nms, dynamic_batch=True
    )
    assert sorted(result.checks) == [1, 2]  # checked at two batch sizes
    _assert_parity(result, nms)
    graph = onnx.load(str(result.path)).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert ("NonMaxSuppression" in {node.op_type for node in graph.node}) == nms


@pytest.mark.parametrize("nms", [False, True])  # VGG16 at 272 px: ~5 s each idle, ~40 s on a loaded machine
def test_ssd300_vgg16_onnx_matches_pytorch(vgg_checkpoint, one_thread, nms):
    result = export_checkpoint(vgg_checkpoint, "onnx", vgg_checkpoint.with_suffix(f".{nms}.onnx"), nms=nms)
    _assert_parity(result, nms)


def test_onnx_nms_outputs_are_fixed_size_and_best_first(lite_checkpoint, one_thread):
    path = lite_checkpoint.with_suffix(".True.onnx")  # written by the dynamic-batch test above
    if not path.exists():
        export_checkpoint(lite_checkpoint, "onnx", path, nms=True, dynamic_batch=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    boxes, scores, labels, counts = session.run(None, {"images": sample_images((128, 128), 3).numpy()})
    max_det = load_checkpoint(lite_checkpoint).detector.settings.max_detections
    assert boxes.shape == (3, max_det, 4) and scores.shape == labels.shape == (3, max_det) and counts.shape == (3,)
    for image_scores, image_labels, n in zip(scores, labels, counts, strict=True):
        assert 0 < n <= max_det
        assert np.all(np.diff(image_scores[:n]) <= 0) and set(image_labels[:n]) <= {1, 2, 3}
        assert np.all(image_scores[n:] == 0) and np.all(image_labels[n:] == 0)


def test_no_box_above_the_threshold_gives_zero_detections(tmp_path, one_thread):
    torch.manual_seed(0)
    checkpoint = make_checkpoint(tmp_path / "strict.ckpt", LITE + ["eval.score_threshold=0.999999"])
    for fmt in ("onnx", "torchscript"):
        result = export_checkpoint(checkpoint, fmt, nms=True)
        assert result.checks[1].detections == 0 and result.checks[1].mismatched == 0


@pytest.mark.parametrize("nms", [False, True])
def test_torchscript_matches_pytorch(lite_checkpoint, one_thread, nms):
    result = export_checkpoint(
        lite_checkpoint, "torchscript", lite_checkpoint.with_suffix(f".{nms}.torchscript"), nms=nms, batch_size=2
    )
    _assert_parity(result, nms)
    reloaded = torch.jit.load(str(result.path))  # a fresh load runs too, at another batch size
    loaded = load_checkpoint(lite_checkpoint)
    parity = check_parity(
        lambda x: [t.numpy() for t in reloaded(torch.from_numpy(x))],
        loaded.detector,
        sample_images((128, 128), 3, seed=1),
        nms,
        1e-4,
    )
    assert max(parity.box_diff, parity.score_diff) < 1e-4 and parity.mismatched == 0


def test_parity_check_catches_a_wrong_graph(lite_checkpoint, one_thread):
    loaded = load_checkpoint(lite_checkpoint)
    images = sample_images((128, 128), 2)

    def broken(x: np.ndarray) -> list[np.ndarray]:
        return [o + 1e-3 for o in _pytorch_outputs(loaded.detector, x)]

    parity = check_parity(broken, loaded.detector, images, False, 1e-4)
    assert parity.box_diff == pytest.approx(1e-3, rel=1e-2) and parity.score_diff == pytest.approx(1e-3, rel=1e-2)


def _pytorch_outputs(detector, images: np.ndarray) -> list[np.ndarray]:
    from multibox.inference.export import ExportableDetector

    with torch.no_grad():
        return [t.numpy() for t in ExportableDetector(detector, nms=False)(torch.from_numpy(images))]


def test_compare_detections_matches_sets_not_positions():
    from types import SimpleNamespace

    detector = SimpleNamespace(settings=SimpleNamespace(score_threshold=0.01, max_detections=4))
    boxes = torch.tensor([[0.1, 0.1, 0.5, 0.5], [0.2, 0.2, 0.6, 0.6], [0.0, 0.0, 0.3, 0.3]])
    reference = [{"boxes": boxes, "scores": torch.tensor([0.9, 0.5, 0.5]), "labels": torch.tensor([1, 2, 3])}]

    def padded(b, s, c):
        return [
            np.pad(b, ((0, 4 - len(s)), (0, 0)))[None],
            np.pad(s.astype(np.float32), (0, 4 - len(s)))[None],
            np.pad(c, (0, 4 - len(s)))[None],
            np.array([len(s)]),
        ]

    swapped = padded(boxes.numpy()[[0, 2, 1]], np.array([0.9, 0.5, 0.5]), np.array([1, 3, 2]))  # a tie in another order
    assert compare_detections(swapped, reference, detector, 1e-4) == Parity(0.0, 0.0, 3, 0)
    moved = padded(
        boxes.numpy() + [[0, 0, 0, 0.01], [0, 0, 0, 0], [0, 0, 0, 0]], np.array([0.9, 0.5, 0.5]), np.array([1, 2, 3])
    )
    assert compare_detections(moved, reference, detector, 1e-4).box_diff == pytest.approx(0.01)
    missing = padded(boxes.numpy()[:2], np.array([0.9, 0.5]), np.array([1, 2]))
    assert compare_detections(missing, reference, detector, 1e-4).mismatched == 1


def test_cli_export_reports_the_difference_and_never_overwrites(lite_checkpoint, one_thread, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    out.write_bytes(b"an earlier export")
    assert main(["export", "--weights", str(lite_checkpoint), "--out", str(out)]) == 2
    assert "already exists; pass --force" in capsys.readouterr().err and out.read_bytes() == b"an earlier export"
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), np.random.default_rng(0).integers(0, 256, (70, 50, 3), dtype=np.uint8))
    assert (
        main(
            ["export", "--weights", str(lite_checkpoint), "--out", str(out), "--force", "--sample-images", str(images)]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "parity at batch 1: max |Δbox|" in printed and str(out) in printed
    onnx.checker.check_model(onnx.load(str(out)))
    assert main(["export", "--weights", str(tmp_path / "missing.ckpt")]) == 2
    assert "missing.ckpt: checkpoint not found" in capsys.readouterr().err


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_decoded_outputs_are_postprocess_before_selection(activation):
    """With nothing filtered (threshold 0, every box a candidate, NMS at IoU 1) the postprocess keeps
    every (box, class): the graph's decoded boxes and scores must be exactly those."""
    from types import SimpleNamespace

    from multibox.boxes.postprocess import PostprocessSettings, postprocess
    from multibox.inference.export import DecodeScores

    n, a, c = 2, 6, 4
    default = torch.cat((torch.rand(a, 2) * 0.6 + 0.2, torch.rand(a, 2) * 0.3 + 0.05), dim=1)
    settings = PostprocessSettings(0.0, 1.0, a, a * (c - 1), activation)
    offsets, logits = torch.randn(n, a, 4), torch.randn(n, a, c) * 2
    boxes, scores = DecodeScores(SimpleNamespace(default_boxes=default, settings=settings))(offsets, logits)
    reference = postprocess(offsets, logits, default, torch.ones(n, 2), settings)
    for i, ref in enumerate(reference):
        for label in range(1, c):
            mine = scores[i, :, label - 1].sort(descending=True)
            theirs = ref["scores"][ref["labels"] == label]
            torch.testing.assert_close(mine.values, theirs)
            torch.testing.assert_close(boxes[i, mine.indices], ref["boxes"][ref["labels"] == label])
