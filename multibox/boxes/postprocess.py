"""From raw head outputs to final detections: decode, score threshold, top-k, batched NMS.

The whole batch goes through one top-k and one ``torchvision.ops.batched_nms`` call,
grouped by (image, class), instead of a Python loop per image and class. The result
is the same set torchvision's SSD postprocess keeps per image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor
from torchvision.ops import batched_nms

from multibox.boxes.coding import BoxCoder


@dataclass(frozen=True)
class PostprocessSettings:
    score_threshold: float = 0.01
    nms_threshold: float = 0.45
    topk_candidates: int = 400
    max_detections: int = 200
    # softmax: scores are softmax(logits)[1:] (class 0 = background, cross-entropy training);
    # sigmoid: sigmoid(logits[1:]), each class on its own (focal-loss training ignores logit 0).
    score_activation: Literal["softmax", "sigmoid"] = "softmax"


def _rank_within_image(image_index: Tensor) -> Tensor:
    """Position of each entry among those of the same image, given entries sorted by score."""
    order = torch.sort(image_index, stable=True).indices  # by image, score order kept inside
    sorted_images = image_index[order]
    counts = torch.bincount(sorted_images, minlength=1)
    starts = torch.cumsum(counts, 0) - counts
    rank_sorted = torch.arange(order.numel(), device=order.device) - starts[sorted_images]
    rank = torch.empty_like(rank_sorted)
    rank[order] = rank_sorted
    return rank


def postprocess(
    box_regression: Tensor,
    cls_logits: Tensor,
    default_cxcywh: Tensor,
    image_sizes: Tensor,
    settings: PostprocessSettings = PostprocessSettings(),
    coder: BoxCoder = BoxCoder(),
) -> list[dict[str, Tensor]]:
    """Detections per image.

    box_regression: (N, A, 4) offsets; cls_logits: (N, A, C) with class 0 = background (scored by
    ``settings.score_activation``: softmax over all C, or sigmoid of columns 1..C-1 alone);
    default_cxcywh: (A, 4) normalised; image_sizes: (N, 2) (height, width) of the original
    images — boxes come back as xyxy in those pixels.
    Returns N dicts with ``boxes`` (D, 4), ``scores`` (D,), ``labels`` (D,) (1..C-1), best first.
    """
    n, num_defaults, num_classes = cls_logits.shape
    scale = image_sizes.flip(-1).repeat(1, 2).to(box_regression.dtype)[:, None, :]  # (N, 1, 4) w h w h
    boxes = (coder.decode(box_regression, default_cxcywh).clamp(0.0, 1.0) * scale).float()  # (N, A, 4)
    if settings.score_activation == "sigmoid":
        scores = torch.sigmoid(cls_logits[..., 1:].float())  # (N, A, K)
    else:
        scores = torch.softmax(cls_logits.float(), dim=-1)[..., 1:]  # (N, A, K)

    k = min(settings.topk_candidates, num_defaults)
    top_scores, top_index = scores.transpose(1, 2).topk(k, dim=2)  # (N, K, k)
    top_boxes = torch.gather(boxes[:, None].expand(-1, num_classes - 1, -1, -1), 2, top_index[..., None].expand(-1, -1, -1, 4))
    labels = torch.arange(1, num_classes, device=cls_logits.device)[None, :, None].expand_as(top_index)
    images = torch.arange(n, device=cls_logits.device)[:, None, None].expand_as(top_index)

    keep = top_scores.reshape(-1) > settings.score_threshold
    flat_boxes, flat_scores = top_boxes.reshape(-1, 4)[keep], top_scores.reshape(-1)[keep]
    flat_labels, flat_images = labels.reshape(-1)[keep], images.reshape(-1)[keep]
    kept = batched_nms(flat_boxes, flat_scores, flat_images * num_classes + flat_labels, settings.nms_threshold)
    kept = kept[_rank_within_image(flat_images[kept]) < settings.max_detections]
    kept = kept[torch.sort(flat_images[kept], stable=True).indices]  # group by image, best first inside

    per_image = torch.bincount(flat_images[kept], minlength=n).tolist()
    fields = (flat_boxes[kept], flat_scores[kept], flat_labels[kept])
    return [
        {"boxes": b, "scores": s, "labels": l}
        for b, s, l in zip(*(torch.split(field, per_image) for field in fields))
    ]
