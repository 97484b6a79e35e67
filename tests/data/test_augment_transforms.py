"""Transforms: boxes must follow the pixels through every preset, and each SSD step must obey its rules."""

from __future__ import annotations

import numpy as np
import pytest

from multibox.data.transforms import (
    MEAN_RGB,
    DetectionTransform,
    IoUCrop,
    ZoomOut,
    build_eval_transform,
    build_train_transform,
)

PRESETS = ["ssd", "ssdlite", "none"]
RED, GREY = (255, 0, 0), (128, 128, 128)


def _scene(rng: np.random.Generator, height: int = 120, width: int = 160) -> tuple[np.ndarray, np.ndarray]:
    """A red rectangle on plain grey, and its box (pixel-edge xyxy)."""
    w, h = rng.integers(12, width // 2), rng.integers(12, height // 2)
    x, y = rng.integers(0, width - w), rng.integers(0, height - h)
    image = np.full((height, width, 3), GREY, np.uint8)
    image[y : y + h, x : x + w] = RED
    return image, np.array([[x, y, x + w, y + h]], np.float32)


def _bbox_of(mask: np.ndarray) -> np.ndarray | None:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return None
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], np.float32)


def _colourful(image: np.ndarray) -> np.ndarray:
    """Pixels of the rectangle whatever the photometric changes: grey (and the zoom-out fill) has little chroma."""
    chroma = image.max(axis=2).astype(int) - image.min(axis=2)
    return chroma > 35


@pytest.mark.parametrize("preset", PRESETS)
def test_box_matches_rendered_pixels(preset: str) -> None:
    transform = build_train_transform(preset, (72, 96), seed=0)
    rng = np.random.default_rng(1)
    kept, outputs = 0, set()
    for _ in range(60):
        image, boxes = _scene(rng)
        out, out_boxes, labels = transform(image, boxes, np.array([7]))
        assert out.shape == (72, 96, 3) and out.dtype == np.uint8
        assert out_boxes.dtype == np.float32 and labels.dtype == np.int64
        if not len(out_boxes):
            continue  # cropped out (its centre left the patch)
        visible = _bbox_of(_colourful(out))
        assert visible is not None and labels.tolist() == [7]
        np.testing.assert_allclose(out_boxes[0], visible, atol=2.0)
        kept += 1
        outputs.add(tuple(np.round(out_boxes[0]).tolist()))
    assert kept >= 30  # the check above really ran
    assert len(outputs) >= 25


@pytest.mark.parametrize("preset", PRESETS)
def test_box_matches_mask_through_full_pipeline(preset: str) -> None:
    # The mask rides along through the same albumentations pipeline, untouched by photometric steps.
    transform = build_train_transform(preset, (80, 80), seed=3)
    rng = np.random.default_rng(2)
    kept, flipped = 0, 0
    for _ in range(60):
        image, boxes = _scene(rng, 150, 110)
        image[:, ::7] = (0, 90, 200)  # some texture, so photometric steps have something to do
        mask = np.zeros(image.shape[:2], np.uint8)
        x0, y0, x1, y1 = boxes[0].astype(int)
        mask[y0:y1, x0:x1] = 1
        mask[y0:y1, x0 : x0 + 3] = 2  # marks the left edge, to see flips
        out = transform.compose(image=image, mask=mask, bboxes=boxes, labels=np.array([1]))
        if not len(out["bboxes"]):
            continue
        np.testing.assert_allclose(out["bboxes"][0], _bbox_of(out["mask"] > 0), atol=1.5)
        left = _bbox_of(out["mask"] == 2)
        flipped += left is not None and left[0] > (out["bboxes"][0][0] + out["bboxes"][0][2]) / 2
        kept += 1
    assert kept >= 30
    assert (flipped > 5) == (preset != "none")


def _coordinate_image(height: int, width: int) -> np.ndarray:
    """Pixel (y, x) holds (x, y, 255): a crop or pad can be read back from the pixels."""
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack([xx, yy, np.full_like(xx, 255)], axis=2).astype(np.uint8)


def test_iou_crop_rules() -> None:
    crop = DetectionTransform([IoUCrop(min_ious=(0.5,))], seed=0)
    boxes = np.array([[10, 10, 90, 70], [150, 100, 230, 190], [100, 20, 110, 30]], np.float32)
    areas = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
    image = _coordinate_image(200, 240)
    cropped = 0
    for _ in range(100):
        out, out_boxes, labels = crop(image, boxes, np.array([1, 2, 3]))
        (left, top), (h, w) = out[0, 0, :2].astype(int), out.shape[:2]
        assert 0.3 * 240 - 1 <= w <= 240 and 0.3 * 200 - 1 <= h <= 200 and 0.5 <= w / h <= 2.0
        cropped += (h, w) != (200, 240)
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        inside = np.all((centres > [left, top]) & (centres < [left + w, top + h]), axis=1)
        np.testing.assert_array_equal(labels, np.flatnonzero(inside) + 1)  # centre rule
        expected = np.clip(boxes[inside] - [left, top, left, top], 0, [w, h, w, h])
        np.testing.assert_allclose(out_boxes, expected, atol=1e-3)
        ious = np.prod(expected[:, 2:] - expected[:, :2], axis=1) / (
            areas[inside] + w * h - np.prod(expected[:, 2:] - expected[:, :2], axis=1)
        )
        assert ious.max() >= 0.5 - 1e-6
    assert cropped > 50


def test_iou_crop_keeps_image_for_none_option_and_without_boxes() -> None:
    image = _coordinate_image(50, 60)
    whole = DetectionTransform([IoUCrop(min_ious=(None,))], seed=0)
    out, out_boxes, _ = whole(image, np.array([[5, 5, 20, 20]]), np.array([1]))
    assert out.shape == image.shape and out_boxes.tolist() == [[5, 5, 20, 20]]
    anywhere = DetectionTransform([IoUCrop()], seed=0)
    out, out_boxes, labels = anywhere(image, np.zeros((0, 4)), np.zeros(0))
    assert out.shape == image.shape and out_boxes.shape == (0, 4) and labels.shape == (0,)


def test_zoom_out_places_image_on_mean_canvas() -> None:
    zoom = DetectionTransform([ZoomOut(max_scale=4.0, p=1.0)], seed=0)
    image = _coordinate_image(40, 50)
    boxes = np.array([[3, 4, 20, 30]], np.float32)
    scales = []
    for _ in range(30):
        out, out_boxes, _ = zoom(image, boxes, np.array([1]))
        h, w = out.shape[:2]
        scales.append(w / 50)
        assert 40 <= h <= 160 and 50 <= w <= 200
        ys, xs = np.nonzero(out[..., 2] == 255)
        top, left = ys.min(), xs.min()
        assert (ys.max() - top + 1, xs.max() - left + 1) == (40, 50)
        assert np.all(out[0, 0] == MEAN_RGB) or (top, left) == (0, 0)
        np.testing.assert_allclose(out_boxes, boxes + [left, top, left, top])
    assert max(scales) > 2.5 and min(scales) < 1.5


def test_eval_transform_is_plain_resize() -> None:
    transform = build_eval_transform((60, 90))
    image = np.zeros((30, 40, 3), np.uint8)
    boxes = np.array([[4, 3, 20, 30], [0, 0, 0.5, 10], [38, 1, 40.5, 29]], np.float32)
    out, out_boxes, labels = transform(image, boxes, np.array([1, 2, 3]))
    assert out.shape == (60, 90, 3)
    # scaled by (90/40, 60/30); the 0.5 px wide box becomes ~1.1 px and stays; the last box is clipped
    np.testing.assert_allclose(out_boxes, [[9, 6, 45, 60], [0, 0, 1.125, 20], [85.5, 2, 90, 58]], atol=1e-4)
    np.testing.assert_array_equal(labels, [1, 2, 3])


def test_boxes_under_one_pixel_are_dropped() -> None:
    transform = build_eval_transform((32, 32))
    boxes = np.array([[0, 0, 100, 100], [10, 10, 12, 200], [50, 50, 200, 52]], np.float32)  # 2 px of 320 -> 0.2 px
    _, out_boxes, labels = transform(np.zeros((320, 320, 3), np.uint8), boxes, np.array([1, 2, 3]))
    assert labels.tolist() == [1] and out_boxes.shape == (1, 4)


def test_seeded_transforms_repeat() -> None:
    rng = np.random.default_rng(0)
    image, boxes = _scene(rng)
    run = lambda t: [t(image, boxes, np.array([1])) for _ in range(5)]  # noqa: E731
    a, b = run(build_train_transform("ssd", (64, 64), seed=11)), run(build_train_transform("ssd", (64, 64), seed=11))
    for (ia, ba, _), (ib, bb, _) in zip(a, b, strict=True):
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(ba, bb)
    assert len({x[0].tobytes() for x in a}) > 1
    with pytest.raises(ValueError, match="preset"):
        build_train_transform("yolo", (64, 64))
