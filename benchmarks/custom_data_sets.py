"""Synthetic COCO sets unlike the demo's, to measure configs/custom_data.yaml (issue 15).

The demo's shapes are 19-64 px on square 128 px frames with category ids 1..5. These sets differ in every
respect a user's own data tends to:

- ``parcels``: 240x400 (HxW) frames, up to 14 objects, a third of them under 32 px; hexagons, diamonds,
  3:1 bars, rings and arrows on cluttered backgrounds (low-contrast rectangles and lines); category ids
  3, 8, 15, 21, 42.
- ``tall``: 384x224 portrait frames, 3 classes (ids 10, 20, 30: circle, star, cross from the demo's
  generator) that are small (5-25 % of the shorter side), up to 10 a frame, on dark noisy backgrounds.

Usage::

    python benchmarks/custom_data_sets.py parcels /tmp/sets/parcels   # writes train/ (600) and val/ (150)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from multibox.data import synth

PARCEL_SHAPES = ("hexagon", "diamond", "bar", "ring", "arrow")
PARCEL_IDS = (3, 8, 15, 21, 42)
TALL_SHAPES = ("circle", "star", "cross")
TALL_IDS = (10, 20, 30)

SETS: dict[str, dict[str, Any]] = {
    "parcels": {
        "size": (240, 400),
        "max_objects": 14,
        "sizes": (0.07, 0.35),
        "shapes": PARCEL_SHAPES,
        "ids": PARCEL_IDS,
    },
    "tall": {"size": (384, 224), "max_objects": 10, "sizes": (0.05, 0.25), "shapes": TALL_SHAPES, "ids": TALL_IDS},
}


def outline(name: str, rng: np.random.Generator) -> np.ndarray:
    """Polygon of a unit-radius shape centred at 0 (y down)."""
    if name == "hexagon":
        t = np.arange(6) * np.pi / 3
        return np.stack([np.cos(t), np.sin(t)], axis=1)
    if name == "diamond":
        return np.array([[0, -1], [0.6, 0], [0, 1], [-0.6, 0]], np.float64)
    if name == "bar":  # 3:1, lying or standing
        bar = np.array([[-1, -0.33], [1, -0.33], [1, 0.33], [-1, 0.33]], np.float64)
        return bar if rng.random() < 0.5 else bar[:, ::-1]
    if name == "arrow":
        return np.array(
            [[-1, -0.25], [0.2, -0.25], [0.2, -0.7], [1, 0], [0.2, 0.7], [0.2, 0.25], [-1, 0.25]], np.float64
        )
    if name == "ring":
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        return np.stack([np.cos(t), np.sin(t)], axis=1)
    return synth._outline(synth.SHAPES.index(name))


def shape_mask(
    rng: np.random.Generator, name: str, height: int, width: int, sizes: tuple[float, float]
) -> tuple[np.ndarray, tuple[int, int]]:
    """A filled shape as a boolean mask and its top-left corner (inside the image)."""
    extent = min(height, width) * np.exp(rng.uniform(np.log(sizes[0]), np.log(sizes[1])))
    angle = rng.uniform(-0.3, 0.3)
    points = outline(name, rng) * (extent / 2)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    points = points @ rotation.T
    points -= points.min(axis=0)
    side = np.ceil(points.max(axis=0)).astype(int) + 1
    mask = np.zeros((side[1], side[0]), np.uint8)
    cv2.fillPoly(mask, [np.round(points * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    if name == "ring":  # a hole of half the radius; the box stays the outer circle's
        centre = (points.max(axis=0) / 2 * 16).round().astype(int)
        cv2.circle(mask, tuple(int(c) for c in centre), int(extent / 4 * 16), 0, -1, lineType=cv2.LINE_8, shift=4)
    x0 = int(rng.integers(0, max(width - side[0], 0) + 1))
    y0 = int(rng.integers(0, max(height - side[1], 0) + 1))
    return np.ascontiguousarray(mask[: height - y0, : width - x0]).view(bool), (x0, y0)


def background(rng: np.random.Generator, height: int, width: int, kind: str) -> np.ndarray:
    """parcels: clutter of low-contrast rectangles and lines; tall: dark noisy gradient."""
    if kind == "tall":
        image = synth._background(rng, height, width).astype(np.float32) * 0.45
        image += rng.normal(0, 12, size=image.shape).astype(np.float32)
        return image.clip(0, 255).astype(np.uint8)
    image = synth._background(rng, height, width)
    base = image.mean(axis=(0, 1))
    for _ in range(int(rng.integers(8, 20))):
        colour = tuple(float(c) for c in np.clip(base + rng.uniform(-35, 35, 3), 0, 255))
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        if rng.random() < 0.5:
            w, h = int(rng.integers(10, 120)), int(rng.integers(10, 80))
            cv2.rectangle(image, (x, y), (x + w, y + h), colour, -1)
        else:
            x2, y2 = int(rng.integers(0, width)), int(rng.integers(0, height))
            cv2.line(image, (x, y), (x2, y2), colour, int(rng.integers(1, 4)))
    return image


def render(
    rng: np.random.Generator, spec: dict[str, Any], kind: str
) -> tuple[np.ndarray, list[tuple[int, ...]], list[int]]:
    height, width = spec["size"]
    image = background(rng, height, width, kind)
    occupied = np.zeros((height, width), bool)
    boxes: list[tuple[int, ...]] = []
    labels: list[int] = []
    wanted = int(rng.integers(2, spec["max_objects"] + 1))
    for _ in range(wanted * 4):
        if len(boxes) == wanted:
            break
        index = int(rng.integers(len(spec["shapes"])))
        mask, (x0, y0) = shape_mask(rng, spec["shapes"][index], height, width, spec["sizes"])
        placed = synth._place(mask, x0, y0, occupied, boxes)
        if placed is None:
            continue
        window = (slice(y0, y0 + mask.shape[0]), slice(x0, x0 + mask.shape[1]))
        image[window][mask] = synth._object_colour(rng, image[window][mask].mean(axis=0))
        occupied[window] |= cv2.dilate(mask.view(np.uint8), np.ones((5, 5), np.uint8)).view(bool)
        boxes.append(placed)
        labels.append(spec["ids"][index])
    return image, boxes, labels


def write_split(out_dir: Path, kind: str, num_images: int, seed: int) -> None:
    spec = SETS[kind]
    rng = np.random.default_rng(seed)
    (out_dir / "images").mkdir(parents=True, exist_ok=False)
    images, annotations = [], []
    height, width = spec["size"]
    for index in range(num_images):
        image, boxes, labels = render(rng, spec, kind)
        name = f"{index:06d}.jpg"
        cv2.imwrite(
            str(out_dir / "images" / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92]
        )
        images.append({"id": index + 1, "file_name": name, "width": width, "height": height})
        for box, label in zip(boxes, labels, strict=True):
            x0, y0, x1, y1 = box
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": index + 1,
                    "category_id": int(label),
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": float((x1 - x0) * (y1 - y0)),
                    "iscrowd": 0,
                }
            )
    categories = [{"id": i, "name": n} for i, n in zip(spec["ids"], spec["shapes"], strict=True)]
    coco = {"images": images, "annotations": annotations, "categories": categories}
    (out_dir / "annotations.json").write_text(json.dumps(coco), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=sorted(SETS))
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--train", type=int, default=600)
    parser.add_argument("--val", type=int, default=150)
    args = parser.parse_args()
    write_split(args.out_dir / "train", args.kind, args.train, seed=1)
    write_split(args.out_dir / "val", args.kind, args.val, seed=2)


if __name__ == "__main__":
    main()
