"""Matching ground truth to default boxes for a whole batch at once.

The SSD rule (torchvision's SSDMatcher): a default box takes the ground-truth box it
overlaps most when that IoU is at least the threshold; then every ground-truth box
claims its single best default box regardless of IoU, so no object goes unmatched.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import box_convert, box_iou


def match(gt_boxes: Tensor, gt_labels: Tensor, default_cxcywh: Tensor, iou_threshold: float = 0.5) -> Tensor:
    """Index of the matched ground truth per default box, -1 for background.

    gt_boxes: (N, G, 4) xyxy, same coordinates as the default boxes (normalised).
    gt_labels: (N, G) int64; 0 marks padding (no box).
    default_cxcywh: (A, 4).
    Returns (N, A) int64 in [-1, G).
    """
    n, g = gt_labels.shape
    num_defaults = default_cxcywh.shape[0]
    valid = gt_labels > 0
    defaults_xyxy = box_convert(default_cxcywh, "cxcywh", "xyxy")
    iou = box_iou(gt_boxes.reshape(-1, 4), defaults_xyxy).reshape(n, g, num_defaults)
    iou = iou.masked_fill(~valid[..., None], -1.0)

    best_iou, best_gt = iou.max(dim=1)  # (N, A)
    matched = torch.where(best_iou >= iou_threshold, best_gt, torch.full_like(best_gt, -1))

    # Force each real ground truth onto its best default box. Padding rows write into a
    # spare column that is dropped afterwards, which keeps this free of host syncs.
    best_default = iou.argmax(dim=2)  # (N, G)
    best_default = torch.where(valid, best_default, torch.full_like(best_default, num_defaults))
    gt_index = torch.arange(g, device=gt_labels.device).expand(n, g)
    spare = torch.full((n, 1), -1, dtype=matched.dtype, device=matched.device)
    matched = torch.cat((matched, spare), dim=1).scatter_(1, best_default, gt_index)
    return matched[:, :num_defaults]


def gather_targets(gt_boxes: Tensor, gt_labels: Tensor, matched: Tensor) -> tuple[Tensor, Tensor]:
    """Per default box, its matched ground-truth box (N, A, 4) and class label (N, A), 0 for background."""
    index = matched.clamp(min=0)
    boxes = torch.gather(gt_boxes, 1, index[..., None].expand(-1, -1, 4))
    labels = torch.gather(gt_labels, 1, index)
    labels = torch.where(matched >= 0, labels, torch.zeros_like(labels))
    return boxes, labels


def ignored_defaults(
    gt_boxes: Tensor, gt_labels: Tensor, default_cxcywh: Tensor, iou_threshold: float = 0.5, min_inside: float = 0.5
) -> Tensor:
    """(N, A) bool: default boxes on an ignore region (ground truth with a negative label, e.g. the
    visible sliver of an object cut by a training crop, see multibox.data.tiles).

    A default box is ignored when it would have matched the region (IoU >= `iou_threshold`) or lies
    mostly inside it (at least `min_inside` of its area): it is neither a positive nor a negative.
    """
    ignore = gt_labels < 0
    n, g = gt_labels.shape
    defaults = box_convert(default_cxcywh, "cxcywh", "xyxy")
    boxes = gt_boxes.reshape(-1, 4)
    iou = box_iou(boxes, defaults).reshape(n, g, -1)
    lt = torch.maximum(boxes[:, None, :2], defaults[None, :, :2])
    rb = torch.minimum(boxes[:, None, 2:], defaults[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=-1).reshape(n, g, -1)
    area = (defaults[:, 2:] - defaults[:, :2]).prod(dim=-1).clamp(min=1e-12)
    hit = (iou >= iou_threshold) | (inter / area >= min_inside)
    return (hit & ignore[..., None]).any(dim=1)
