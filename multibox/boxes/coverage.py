"""How well default boxes cover a dataset's boxes: best IoU per box and the positives the training matcher
gives it (``multibox data stats``, the coverage check printed before training)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torchvision.ops import box_convert, box_iou

from multibox.data.records import DetectionSet
from multibox.data.stats import LARGE, SMALL, box_columns, describe

IOU_CHUNK = 2048  # ground-truth boxes per box_iou call (chunk x defaults floats)


def best_default_box_ious(gt_xyxy: torch.Tensor, default_cxcywh: torch.Tensor, chunk: int = IOU_CHUNK) -> torch.Tensor:
    """Best IoU of each (normalised xyxy) gt box with any default box, box_iou on chunks of gt boxes."""
    defaults = box_convert(default_cxcywh.float(), "cxcywh", "xyxy")
    out = torch.zeros(len(gt_xyxy))
    for start in range(0, len(gt_xyxy), chunk):
        out[start : start + chunk] = box_iou(gt_xyxy[start : start + chunk].float(), defaults).max(dim=1).values
    return out


def positives_per_object(
    gt_xyxy: torch.Tensor,
    image_index: torch.Tensor,
    num_images: int,
    default_cxcywh: torch.Tensor,
    iou_threshold: float,
    budget: int = 2**24,
) -> torch.Tensor:
    """Default boxes the training matcher (:func:`multibox.boxes.matching.match`) assigns to each gt box.

    Images are padded into (N, G, 4) batches sized to keep N x G x A IoUs under `budget`."""
    from multibox.boxes.matching import match

    counts = torch.bincount(image_index, minlength=num_images)
    positives = torch.zeros(len(gt_xyxy), dtype=torch.int64)
    if not len(gt_xyxy):
        return positives
    order = torch.argsort(image_index, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    anchors = len(default_cxcywh)
    images = torch.nonzero(counts).flatten().tolist()
    i = 0
    while i < len(images):
        g = int(counts[images[i]])
        n = 1
        while i + n < len(images) and (n + 1) * max(g, int(counts[images[i + n]])) * anchors <= budget:
            g = max(g, int(counts[images[i + n]]))
            n += 1
        chunk = images[i : i + n]
        boxes = torch.zeros(n, g, 4)
        labels = torch.zeros(n, g, dtype=torch.int64)
        for row, image in enumerate(chunk):
            idx = order[starts[image] : starts[image] + counts[image]]
            boxes[row, : len(idx)] = gt_xyxy[idx].float()
            labels[row, : len(idx)] = 1
        matched = match(boxes, labels, default_cxcywh.float(), iou_threshold)  # (n, A): gt index or -1
        rows = torch.arange(n).unsqueeze(1).expand_as(matched)
        flat = (rows * g + matched)[matched >= 0]
        hits = torch.bincount(flat, minlength=n * g).reshape(n, g)
        for row, image in enumerate(chunk):
            idx = order[starts[image] : starts[image] + counts[image]]
            positives[idx] = hits[row, : len(idx)]
        i += n
    return positives


def anchor_coverage(dataset: DetectionSet, default_cxcywh: torch.Tensor, iou_threshold: float = 0.5) -> dict[str, Any]:
    """How well default boxes (A, 4 normalised cxcywh of the input) cover the dataset's non-crowd boxes.

    Each gt box is resized with its image to the input, i.e. normalised by the image size (IoU does not
    change under the per-axis scaling of the resize). ``covered``: share with best IoU >= 0.5, overall
    and per COCO size bucket (box area in original pixels); ``positives_per_object``: default boxes
    matched to each gt box at `iou_threshold` by the training matcher (at least 1: the forced match).
    """
    cols = box_columns(dataset)
    scale = np.stack([cols["widths"], cols["heights"], cols["widths"], cols["heights"]], axis=1)
    gt = (
        torch.from_numpy(np.clip(cols["boxes"] / np.maximum(scale, 1e-9), 0.0, 1.0)).float()
        if len(scale)
        else torch.zeros(0, 4)
    )
    best = best_default_box_ious(gt, default_cxcywh)
    positives = positives_per_object(
        gt, torch.from_numpy(cols["image_index"]), len(dataset), default_cxcywh, iou_threshold
    )
    boxes = cols["boxes"]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    buckets = {"small": area < SMALL, "medium": (area >= SMALL) & (area < LARGE), "large": area >= LARGE}
    best_np, pos_np = best.numpy().astype(np.float64), positives.numpy()

    def summary(mask: np.ndarray) -> dict[str, Any]:
        count = int(mask.sum())
        nan = float("nan")
        return {
            "boxes": count,
            "covered": float((best_np[mask] >= 0.5).mean()) if count else nan,
            "mean_best_iou": float(best_np[mask].mean()) if count else nan,
            "covered_at_threshold": float((best_np[mask] >= iou_threshold).mean()) if count else nan,
            "mean_positives": float(pos_np[mask].mean()) if count else nan,
        }

    overall = summary(np.ones(len(best_np), bool))
    return {
        "default_boxes": int(len(default_cxcywh)),
        "iou_threshold": float(iou_threshold),
        **overall,
        "uncovered": int((best_np < 0.5).sum()),
        "best_iou": describe(best_np),
        "positives_per_object": describe(pos_np),
        "only_forced_match": int((best_np < iou_threshold).sum()),
        "size_buckets": {name: summary(mask) for name, mask in buckets.items()},
        "per_class": {
            name: summary(cols["labels"] == label) for label, name in enumerate(dataset.class_names, start=1)
        },
        "_raw": {"best_iou": best_np, "positives": pos_np},
    }
