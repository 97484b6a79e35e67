"""Dataset statistics, and how well a config's default boxes cover the ground truth.

Everything comes from the annotations (no image is read). :func:`dataset_stats` and
:func:`anchor_coverage` return plain dicts (JSON-able); :func:`print_stats` and
:func:`plot_stats` present them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike

from multibox.data.records import DetectionSet

PERCENTILES = (0, 5, 25, 50, 75, 95, 100)
SMALL, LARGE = 32**2, 96**2  # COCO size buckets, box area in original pixels


def describe(values: ArrayLike) -> dict[str, float | int]:
    """count, mean and the PERCENTILES (p0 = min, p100 = max) of `values`; NaN when empty."""
    values = np.asarray(values, np.float64).reshape(-1)
    out: dict[str, float | int] = {
        "count": int(values.size),
        "mean": float(values.mean()) if values.size else float("nan"),
    }
    qs = np.percentile(values, PERCENTILES) if values.size else [float("nan")] * len(PERCENTILES)
    out.update({f"p{p}": float(q) for p, q in zip(PERCENTILES, qs, strict=True)})
    return out


def box_columns(dataset: DetectionSet) -> dict[str, np.ndarray]:
    """All non-crowd boxes as flat columns: xyxy, label, image index, image width/height."""
    records = dataset.records
    counts = np.array([int((~r.iscrowd).sum()) for r in records], np.int64)
    keep = [~r.iscrowd for r in records]
    boxes = np.concatenate(
        [r.boxes[k] for r, k in zip(records, keep, strict=True)] or [np.zeros((0, 4), np.float32)]
    ).reshape(-1, 4)
    labels = np.concatenate(
        [r.labels[k] for r, k in zip(records, keep, strict=True)] or [np.zeros(0, np.int64)]
    ).astype(np.int64)
    image_index = np.repeat(np.arange(len(records)), counts)
    widths = np.array([r.width for r in records], np.float64)[image_index]
    heights = np.array([r.height for r in records], np.float64)[image_index]
    return {
        "boxes": boxes.astype(np.float64),
        "labels": labels,
        "image_index": image_index,
        "counts": counts,
        "widths": widths,
        "heights": heights,
    }


def normalised_boxes(dataset: DetectionSet) -> tuple[torch.Tensor, np.ndarray]:
    """Non-crowd boxes as (G, 4) xyxy fractions of their image (as resized to any input: IoU is unchanged
    by the per-axis resize), and their areas in original pixels (for the COCO size buckets)."""
    cols = box_columns(dataset)
    boxes = cols["boxes"]
    scale = np.stack([cols["widths"], cols["heights"], cols["widths"], cols["heights"]], axis=1)
    gt = (
        torch.from_numpy(np.clip(boxes / np.maximum(scale, 1e-9), 0.0, 1.0))
        if len(boxes)
        else torch.zeros(0, 4, dtype=torch.float64)
    )
    return gt, (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def dataset_stats(dataset: DetectionSet) -> dict[str, Any]:
    """Images, boxes per class and per image, box size (sqrt area: pixels and relative to the image)
    and aspect ratio (w / h) distributions, overall and per class. Crowd boxes are counted apart."""
    cols = box_columns(dataset)
    boxes = cols["boxes"]
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    size = np.sqrt(np.clip(w * h, 0, None))
    relative = size / np.sqrt(cols["widths"] * cols["heights"])
    aspect = w / np.where(h > 0, h, np.nan)
    per_class = {}
    for label, name in enumerate(dataset.class_names, start=1):
        mask = cols["labels"] == label
        per_class[name] = {
            "boxes": int(mask.sum()),
            "size_px": describe(size[mask]),
            "size_relative": describe(relative[mask]),
            "aspect_ratio": describe(aspect[mask]),
        }
    area = w * h
    return {
        "images": len(dataset),
        "images_without_boxes": int((cols["counts"] == 0).sum()),
        "boxes": int(len(boxes)),
        "crowd_boxes": int(sum(int(r.iscrowd.sum()) for r in dataset.records)),
        "classes": list(dataset.class_names),
        "boxes_per_class": {name: per_class[name]["boxes"] for name in dataset.class_names},
        "boxes_per_image": describe(cols["counts"]),
        "image_width": describe([r.width for r in dataset.records]),
        "image_height": describe([r.height for r in dataset.records]),
        "size_px": describe(size),
        "size_relative": describe(relative),
        "aspect_ratio": describe(aspect),
        "size_buckets": {
            "small": int((area < SMALL).sum()),
            "medium": int(((area >= SMALL) & (area < LARGE)).sum()),
            "large": int((area >= LARGE).sum()),
        },
        "per_class": per_class,
        "_raw": {"size_px": size, "aspect_ratio": aspect, "labels": cols["labels"], "boxes_per_image": cols["counts"]},
    }


def public(stats: dict[str, Any]) -> dict[str, Any]:
    """`stats` without the raw arrays (keys starting with '_'), JSON-able."""
    if isinstance(stats, dict):
        return {k: public(v) for k, v in stats.items() if not str(k).startswith("_")}
    if isinstance(stats, float) and not np.isfinite(stats):
        return None  # strict JSON: an empty bucket's mean is null
    return stats


def input_size_for(dataset: DetectionSet, short_side: int, multiple: int = 16) -> tuple[int, int]:
    """[H, W] with the given shorter side and the training images' median aspect ratio (`data.input_short_side`).

    The median, not the mean: a few odd frames (a panorama among phone photos) should not stretch every image.
    The longer side is rounded to a multiple of 16, so feature maps of stride 8 and 16 divide it evenly.
    """
    if not len(dataset):
        return short_side, short_side
    aspect = float(np.median([record.width / max(record.height, 1) for record in dataset.records]))  # W / H
    longer = max(short_side, int(round(short_side * max(aspect, 1 / aspect) / multiple)) * multiple)
    return (short_side, longer) if aspect >= 1 else (longer, short_side)
