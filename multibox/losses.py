"""MultiBox loss: smooth L1 on matched boxes plus cross-entropy with hard negative mining.

Matching, encoding and mining run on the whole batch as tensor operations on the
batch's device, with no host sync, so the loss costs a few kernels rather than a
Python loop per image. Both terms are normalised by the number of positives in the
batch, as in the paper and torchvision.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from multibox.boxes.coding import BoxCoder
from multibox.boxes.matching import gather_targets, match


def hard_negative_mask(cls_loss: Tensor, positive: Tensor, neg_pos_ratio: float) -> Tensor:
    """(N, A) bool: per image, the neg_pos_ratio x #positives background boxes with the highest loss."""
    negative_loss = cls_loss.detach().masked_fill(positive, -float("inf"))
    order = negative_loss.argsort(dim=1, descending=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    num_negative = neg_pos_ratio * positive.sum(dim=1, keepdim=True)
    return (rank < num_negative) & ~positive


class MultiBoxLoss(nn.Module):
    """Loss of an SSD's raw outputs against padded ground truth, given the default boxes."""

    def __init__(
        self,
        num_classes: int,
        neg_pos_ratio: float = 3.0,
        iou_threshold: float = 0.5,
        class_weights: list[float] | None = None,
        bbox_weight: float = 1.0,
        cls_weight: float = 1.0,
        coder: BoxCoder | None = None,
    ) -> None:
        super().__init__()
        self.neg_pos_ratio = neg_pos_ratio
        self.iou_threshold = iou_threshold
        self.bbox_weight = bbox_weight
        self.cls_weight = cls_weight
        self.coder = coder or BoxCoder()
        weights = None
        if class_weights is not None:
            if len(class_weights) != num_classes - 1:
                raise ValueError(f"class_weights needs {num_classes - 1} values (one per foreground class)")
            weights = torch.tensor([1.0, *class_weights], dtype=torch.float32)
        self.register_buffer("class_weights", weights, persistent=False)

    def forward(
        self, box_regression: Tensor, cls_logits: Tensor, default_cxcywh: Tensor, gt_boxes: Tensor, gt_labels: Tensor
    ) -> dict[str, Tensor]:
        """box_regression (N, A, 4), cls_logits (N, A, C), default boxes (A, 4) cxcywh,
        gt_boxes (N, G, 4) xyxy in the default boxes' coordinates, gt_labels (N, G) with 0 = padding.
        Returns ``loss`` (weighted sum), ``loss_bbox``, ``loss_cls`` and ``num_positives``."""
        matched = match(gt_boxes, gt_labels, default_cxcywh, self.iou_threshold)
        target_boxes, target_labels = gather_targets(gt_boxes, gt_labels, matched)
        positive = target_labels > 0
        num_positives = positive.sum()
        normaliser = num_positives.clamp(min=1).to(box_regression.dtype)

        target_offsets = self.coder.encode(target_boxes, default_cxcywh)
        bbox = F.smooth_l1_loss(box_regression.float(), target_offsets, reduction="none").sum(dim=-1)
        loss_bbox = (bbox * positive).sum() / normaliser

        num_classes = cls_logits.shape[-1]
        cls = F.cross_entropy(
            cls_logits.float().reshape(-1, num_classes), target_labels.reshape(-1), weight=self.class_weights, reduction="none"
        ).reshape(target_labels.shape)
        selected = positive | hard_negative_mask(cls, positive, self.neg_pos_ratio)
        loss_cls = (cls * selected).sum() / normaliser

        loss = self.bbox_weight * loss_bbox + self.cls_weight * loss_cls
        return {"loss": loss, "loss_bbox": loss_bbox, "loss_cls": loss_cls, "num_positives": num_positives}
