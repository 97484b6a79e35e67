"""Synthetic shapes dataset in COCO format, for tests, benchmarks and the demo.

Flat-coloured shapes (the class is the shape, the colour is random) on mildly textured
backgrounds. Shapes never touch each other, so every box is the exact tight box of its
shape's pixels. It is fast to make and learnable in a few CPU minutes by a small SSD.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from multibox.data.iou import iou_matrix
from multibox.errors import MultiboxError

SHAPES = ("circle", "square", "triangle", "cross", "star")
MIN_SIZE, MAX_SIZE = 0.06, 0.5  # shape extent as a fraction of the image's shorter side
MAX_BOX_IOU = 0.2  # boxes may overlap a little; the shapes' pixels never do


def make_synthetic_dataset(
    out_dir: Path,
    num_images: int,
    size: tuple[int, int] = (128, 128),
    seed: int = 0,
    max_objects: int = 6,
    image_ext: str = ".jpg",
    object_sizes: tuple[float, float] = (MIN_SIZE, MAX_SIZE),
) -> Path:
    """Write `out_dir/images/000000.jpg ...` and `out_dir/annotations.json`; return `out_dir`.

    `size` is (H, W). Deterministic for a seed. Refuses to write where a dataset already is.
    """
    out_dir = Path(out_dir)
    image_dir = out_dir / "images"
    if (out_dir / "annotations.json").exists():
        raise MultiboxError(f"{out_dir}: already holds a dataset (annotations.json); choose a new folder")
    if image_dir.is_dir() and any(image_dir.iterdir()):
        raise MultiboxError(f"{image_dir}: not empty (an interrupted run?); delete it or choose a new folder")
    if num_images < 1 or max_objects < 1 or min(size) < 16:
        raise MultiboxError(f"{out_dir}: need num_images >= 1, max_objects >= 1 and both sides of size >= 16")
    if not 0 < object_sizes[0] <= object_sizes[1] <= 1:
        raise MultiboxError(f"{out_dir}: object sizes must satisfy 0 < min <= max <= 1, got {object_sizes}")
    image_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    height, width = size
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for index in range(num_images):
        image, boxes, labels = render_image(rng, (height, width), max_objects, object_sizes)
        file_name = f"{index:06d}{image_ext}"
        cv2.imwrite(str(image_dir / file_name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
        images.append({"id": index + 1, "file_name": file_name, "width": width, "height": height})
        annotations.extend(_annotations(boxes, labels, image_id=index + 1, first_id=len(annotations) + 1))
    categories = [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(SHAPES)]
    coco = {
        "info": {"description": f"multibox synthetic shapes, seed {seed}"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    (out_dir / "annotations.json").write_text(json.dumps(coco), encoding="utf-8")
    return out_dir


def _annotations(boxes: np.ndarray, labels: np.ndarray, image_id: int, first_id: int) -> list[dict[str, Any]]:
    xywh = boxes.astype(np.int64)
    xywh[:, 2:] -= xywh[:, :2]
    return [
        {
            "id": first_id + i,
            "image_id": image_id,
            "category_id": int(label),
            "bbox": box,
            "area": float(box[2] * box[3]),
            "iscrowd": 0,
        }
        for i, (box, label) in enumerate(zip(xywh.tolist(), labels.tolist(), strict=True))
    ]


def render_image(
    rng: np.random.Generator,
    size: tuple[int, int],
    max_objects: int = 6,
    object_sizes: tuple[float, float] = (MIN_SIZE, MAX_SIZE),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One RGB image with its tight xyxy boxes (pixel edges, int) and category ids 1..len(SHAPES).

    `object_sizes` bounds each shape's extent as a fraction of the image's shorter side."""
    height, width = size
    image = _background(rng, height, width)
    occupied = np.zeros((height, width), bool)
    boxes: list[tuple[int, ...]] = []
    labels: list[int] = []
    wanted = int(rng.integers(1, max_objects + 1))
    for _ in range(wanted * 4):  # a few placement tries per object
        if len(boxes) == wanted:
            break
        shape = int(rng.integers(len(SHAPES)))
        mask, (x0, y0) = _shape_mask(rng, shape, height, width, object_sizes)
        placed = _place(mask, x0, y0, occupied, boxes)
        if placed is None:
            continue
        window = (slice(y0, y0 + mask.shape[0]), slice(x0, x0 + mask.shape[1]))
        image[window][mask] = _object_colour(rng, image[window][mask].mean(axis=0))
        occupied[window] |= cv2.dilate(mask.view(np.uint8), np.ones((5, 5), np.uint8)).view(bool)
        boxes.append(placed)
        labels.append(shape + 1)
    return image, np.array(boxes, np.int64).reshape(-1, 4), np.array(labels, np.int64)


def _place(
    mask: np.ndarray, x0: int, y0: int, occupied: np.ndarray, boxes: list[tuple[int, ...]]
) -> tuple[int, ...] | None:
    """The shape's tight box if it touches no other shape and overlaps no box much, else None."""
    window = occupied[y0 : y0 + mask.shape[0], x0 : x0 + mask.shape[1]]
    if not mask.any() or (window & mask).any():
        return None
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    box = (x0 + int(cols[0]), y0 + int(rows[0]), x0 + int(cols[-1]) + 1, y0 + int(rows[-1]) + 1)
    if boxes and iou_matrix(np.array([box], np.float64), np.array(boxes, np.float64)).max() > MAX_BOX_IOU:
        return None
    return box


def _shape_mask(
    rng: np.random.Generator, shape: int, height: int, width: int, sizes: tuple[float, float]
) -> tuple[np.ndarray, tuple[int, int]]:
    """A filled shape as a boolean mask, and the mask's top-left corner (fully inside the image)."""
    extent = min(height, width) * np.exp(rng.uniform(np.log(sizes[0]), np.log(sizes[1])))
    aspect = np.exp(rng.uniform(-0.2, 0.2)) if SHAPES[shape] in ("circle", "square") else 1.0
    angle = rng.uniform(0, 2 * np.pi) if SHAPES[shape] == "triangle" else rng.uniform(-0.35, 0.35)
    points = _outline(shape) * (extent / 2) * np.array([aspect, 1 / aspect])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    points = points @ rotation.T
    points -= points.min(axis=0)
    side = np.ceil(points.max(axis=0)).astype(int) + 1
    mask = np.zeros((side[1], side[0]), np.uint8)
    cv2.fillPoly(mask, [np.round(points * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    x0 = int(rng.integers(0, max(width - side[0], 0) + 1))
    y0 = int(rng.integers(0, max(height - side[1], 0) + 1))
    return np.ascontiguousarray(mask[: height - y0, : width - x0]).view(bool), (x0, y0)


def _outline(shape: int) -> np.ndarray:
    """Polygon of a unit-radius shape centred at 0 (y down)."""
    name = SHAPES[shape]
    if name == "circle":
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        return np.stack([np.cos(t), np.sin(t)], axis=1)
    if name == "square":
        return np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64) * 0.8
    if name == "triangle":
        t = -np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        return np.stack([np.cos(t), np.sin(t)], axis=1)
    if name == "cross":
        a, b = 1.0, 0.33
        return np.array(
            [[-b, -a], [b, -a], [b, -b], [a, -b], [a, b], [b, b], [b, a], [-b, a], [-b, b], [-a, b], [-a, -b], [-b, -b]]
        )
    t = -np.pi / 2 + np.arange(10) * np.pi / 5  # star: 5 points, inner radius 0.45
    radius = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
    return np.stack([radius * np.cos(t), radius * np.sin(t)], axis=1)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Muted texture (gradient, stripes or smooth noise) with mild pixel noise."""
    base = rng.uniform(60, 190, size=3).astype(np.float32)
    other = np.clip(base + rng.uniform(-50, 50, size=3), 0, 255).astype(np.float32)
    yy = np.arange(height, dtype=np.float32)[:, None]
    xx = np.arange(width, dtype=np.float32)[None, :]
    kind = rng.integers(3)
    if kind == 0:  # linear gradient in a random direction
        angle = rng.uniform(0, 2 * np.pi)
        t = xx * np.float32(np.cos(angle)) + yy * np.float32(np.sin(angle))
        t = (t - t.min()) / max(float(np.ptp(t)), 1.0)
    elif kind == 1:  # soft stripes
        angle, period = rng.uniform(0, np.pi), rng.uniform(8, 32)
        phase = (xx * np.float32(np.cos(angle)) + yy * np.float32(np.sin(angle))) * np.float32(2 * np.pi / period)
        t = 0.5 + 0.5 * np.sin(phase)
    else:  # smooth blobs: upsampled coarse noise
        coarse = rng.uniform(0, 1, size=(4, 4)).astype(np.float32)
        t = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    noise = rng.random((height, width), dtype=np.float32) * 20 - 10  # grey grain, std ~6
    channels = [(b + (o - b) * t + noise).clip(0, 255).astype(np.uint8) for b, o in zip(base, other, strict=True)]
    return cv2.merge(channels)  # per-channel 2-D maths: much faster than broadcasting over (H, W, 3)


def _object_colour(rng: np.random.Generator, background: np.ndarray) -> np.ndarray:
    """A saturated random colour that stands out from the local background."""
    for _ in range(20):
        colour = rng.uniform(0, 255, size=3)
        if np.abs(colour - background).sum() > 180 and np.ptp(colour) > 60:
            break
    return colour.astype(np.uint8)
