"""Detector: the same detections as SSDDetector.detect after the eval transform, for every input type."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from multibox.data.transforms import build_eval_transform
from multibox.engine.checkpoint import load_checkpoint
from multibox.errors import MultiboxError
from multibox.inference.api import Detections, Detector, to_rgb

# A second OpenMP thread spins against the loaded CPU and slows tiny forward passes 10x (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")
CONF = 0.3  # the test checkpoint scores most boxes 0.2-0.3 and a few up to 0.8


def _images() -> list[np.ndarray]:
    """Three RGB images of different sizes and aspect ratios, with some structure to detect."""
    rng = np.random.default_rng(0)
    images = []
    for height, width in [(64, 64), (48, 90), (120, 70)]:
        image = np.full((height, width, 3), 110, np.uint8)
        cv2.circle(image, (width // 3, height // 2), min(height, width) // 4, (230, 40, 40), -1)
        cv2.rectangle(image, (width // 2, height // 4), (width - 4, height - 6), (30, 200, 60), -1)
        images.append((image.astype(np.int16) + rng.integers(-20, 20, image.shape)).clip(0, 255).astype(np.uint8))
    return images


def _reference(checkpoint, images, conf, iou=None, max_det=None):
    """SSDDetector.detect by hand: eval transform, [0, 1] floats, default pre-NMS threshold, then conf."""
    loaded = load_checkpoint(checkpoint)
    settings = loaded.detector.settings
    assert settings.score_threshold < 0.05  # evaluation's low threshold, not conf
    loaded.detector.settings = dataclasses.replace(
        settings, nms_threshold=iou or settings.nms_threshold, max_detections=max_det or settings.max_detections
    )
    transform = build_eval_transform(tuple(loaded.config.data.input_size))
    resized = [transform(im, np.zeros((0, 4), np.float32), np.zeros(0, np.int64))[0] for im in images]
    batch = torch.from_numpy(np.stack(resized)).permute(0, 3, 1, 2).float() / 255
    found = loaded.detector.detect(batch, torch.tensor([im.shape[:2] for im in images]))
    out = []
    for d in found:
        keep = d["scores"] >= conf
        out.append({k: v[keep].numpy() for k, v in d.items()})
    return out


def _assert_same(got: list[Detections], expected: list[dict]) -> None:
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert len(g) == len(e["scores"]) > 0
        np.testing.assert_allclose(g.boxes, e["boxes"], atol=1e-4)
        np.testing.assert_allclose(g.scores, e["scores"], atol=1e-6)
        np.testing.assert_array_equal(g.labels, e["labels"] - 1)


@pytest.mark.parametrize("conf, iou, max_det", [(CONF, None, None), (0.05, 0.3, 5)])
def test_matches_ssd_detector_with_the_eval_transform(tiny_checkpoint, conf, iou, max_det):
    images = _images()
    detector = Detector.from_checkpoint(tiny_checkpoint, device="cpu", conf=conf, iou=iou, max_det=max_det)
    got = detector(images)
    _assert_same(got, _reference(tiny_checkpoint, images, conf, iou, max_det))
    for found, image in zip(got, images, strict=True):
        assert found.image_size == image.shape[:2]
        assert found.names == [detector.class_names[i] for i in found.labels]
        np.testing.assert_array_equal(found.category_ids, found.labels + 1)  # the dataset's ids are 1..5
        assert (found.boxes[:, 2] <= image.shape[1]).all() and (found.boxes[:, 3] <= image.shape[0]).all()
    if max_det is not None:
        assert all(len(found) <= max_det for found in got)


def test_every_input_type_gives_the_same_detections(make_detector, tmp_path):
    image = _images()[1]
    path = tmp_path / "image.png"  # lossless, so every reader sees the same pixels
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    detector = make_detector(conf=CONF)
    expected = detector(image)
    assert len(expected) == 1 and len(expected[0]) > 0
    inputs = [
        str(path),
        path,
        Image.open(path),
        torch.from_numpy(image).permute(2, 0, 1),
        torch.from_numpy(image).permute(2, 0, 1).float() / 255,
    ]
    for item in inputs:
        (found,) = detector(item)
        np.testing.assert_array_equal(found.boxes, expected[0].boxes)
        np.testing.assert_array_equal(found.labels, expected[0].labels)
    batch = detector(np.stack([image, image, image]), batch_size=2)
    assert len(batch) == 3
    for found in batch:  # batched convolutions may differ from single ones in the last bits
        np.testing.assert_allclose(found.scores, expected[0].scores, rtol=1e-4)
        np.testing.assert_allclose(found.boxes, expected[0].boxes, atol=1e-3)


def test_exif_orientation_is_applied_for_paths_and_pil_images(tmp_path):
    image = np.zeros((48, 90, 3), np.uint8)
    image[:, :30], image[:24, 30:] = (220, 30, 30), (30, 30, 220)  # asymmetric blocks: a wrong turn shows
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    Image.fromarray(image).save(path, quality=95, exif=exif)
    from_path, from_pil = to_rgb(path), to_rgb(Image.open(path))
    assert from_path.shape == from_pil.shape == (90, 48, 3)
    upright = np.rot90(image, k=-1)
    for rgb in (from_path, from_pil):
        assert np.abs(rgb.astype(int) - upright).mean() < 3
        assert np.abs(rgb.astype(int) - np.rot90(image, k=1)).mean() > 30


def test_class_filter_keeps_max_det_places_for_the_chosen_classes(make_detector):
    images = _images()
    everything = make_detector(conf=0.05, max_det=1000)(images)
    for classes in (["square", "star"], [1, 4], ["1", "star"]):
        chosen = make_detector(conf=0.05, max_det=3, classes=classes)(images)
        for all_found, found in zip(everything, chosen, strict=True):
            keep = np.flatnonzero(np.isin(all_found.labels, [1, 4]))[:3]
            assert len(found) == len(keep) == 3
            np.testing.assert_array_equal(found.scores, all_found.scores[keep])
            assert set(found.names) <= {"square", "star"}


def test_detections_to_coco_and_yolo():
    found = Detections(
        boxes=np.array([[10.0, 20.0, 50.0, 40.0], [0.0, 0.0, 100.0, 80.0]], np.float32),
        scores=np.array([0.9, 0.51234], np.float32),
        labels=np.array([2, 0]),
        names=["c", "a"],
        category_ids=np.array([7, 1]),
        image_size=(80, 100),
    )
    coco = found.to_coco(4, "x/y.jpg")
    assert coco[0] == {
        "image_id": 4,
        "file_name": "x/y.jpg",
        "category_id": 7,
        "bbox": [10.0, 20.0, 40.0, 20.0],
        "score": 0.9,
    }
    assert (
        coco[1]["bbox"] == [0.0, 0.0, 100.0, 80.0] and coco[1]["score"] == 0.51234
    )  # 5 decimals, as evaluation rounds
    assert found.to_yolo().splitlines() == [
        "2 0.300000 0.375000 0.400000 0.250000 0.9000",
        "0 0.500000 0.500000 1.000000 1.000000 0.5123",
    ]


@pytest.mark.parametrize(
    "options, message",
    [
        ({"half": True}, "half: fp16 inference needs a CUDA device"),
        ({"device": "tpu9"}, "device: unknown device 'tpu9'"),
        ({"conf": 1.5}, "conf: must be in [0, 1], got 1.5"),
        ({"classes": ["dog"]}, "classes: unknown class 'dog' (names: circle, square"),
        ({"classes": [7]}, "classes: unknown class 7"),
    ],
)
def test_bad_options_are_one_line_errors(make_detector, options, message):
    with pytest.raises(MultiboxError) as excinfo:
        make_detector(**options)
    assert message in str(excinfo.value) and "\n" not in str(excinfo.value)


def test_bad_inputs_are_one_line_errors(make_detector, tmp_path):
    detector = make_detector()
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    cases = [
        (tmp_path / "missing.jpg", "missing.jpg: image not found"),
        (tmp_path / "broken.jpg", "broken.jpg: cannot read image"),
        (np.zeros((8, 8, 2), np.uint8), "expected HxWx3 uint8 RGB"),
        (torch.full((3, 8, 8), 2.0), "uint8 or float in [0, 1]"),
    ]
    for image, message in cases:
        with pytest.raises(MultiboxError) as excinfo:
            detector(image)
        assert message in str(excinfo.value)


def _top_level_imports(module: str) -> set[str]:
    """Modules that `module`'s file imports at its top level (not inside functions)."""
    import ast
    import importlib.util

    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None, module
    tree = ast.parse(open(spec.origin, encoding="utf-8").read())
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


@pytest.mark.parametrize("entry", ["multibox.inference.predict", "multibox.inference.export"])
def test_prediction_and_export_do_not_import_lightning(entry):
    """Lightning (with torchmetrics and scipy) cost `predict` and `export` 3 of their 11 CPU-s of imports on the 2-core
    machine, and they do not need it. Walks multibox's own top-level imports from the entry module."""
    seen, todo = set(), [entry]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        imports = _top_level_imports(module)
        assert not {name for name in imports if name.split(".")[0] in ("lightning", "pytorch_lightning")}, module
        todo += [name for name in imports if name.startswith("multibox.") or name == "multibox"]


def test_import_multibox_does_not_import_torch():
    code = "import sys, multibox; assert 'torch' not in sys.modules and 'cv2' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0
    import multibox

    assert multibox.Detector is Detector


def test_grayscale_array_is_accepted_as_its_file_is(make_detector, tmp_path) -> None:
    """Issue 14 item 12: a (H, W) array failed with `got shape (128,)`; a grayscale file of it was fine."""
    gray = cv2.cvtColor(_images()[0], cv2.COLOR_RGB2GRAY)
    cv2.imwrite(str(tmp_path / "gray.png"), gray)
    detector = make_detector(conf=CONF)
    from_array, from_file = detector(gray)[0], detector(tmp_path / "gray.png")[0]
    np.testing.assert_allclose(from_array.boxes, from_file.boxes, atol=1e-4)
    assert to_rgb(torch.from_numpy(gray)).shape == (64, 64, 3)


def test_truncated_jpeg_is_refused_without_libjpeg_noise(tmp_path, capfd) -> None:
    """Issue 14 item 16: libjpeg's `Premature end of JPEG file` leaked to stderr from predict."""
    from multibox.inference.api import read_rgb

    ok, encoded = cv2.imencode(".jpg", _images()[0])
    (tmp_path / "cut.jpg").write_bytes(encoded.tobytes()[: len(encoded) // 2])
    assert read_rgb(tmp_path / "cut.jpg") is None
    assert "JPEG" not in capfd.readouterr().err
