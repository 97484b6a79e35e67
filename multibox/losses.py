"""MultiBox loss: smooth L1 on matched boxes plus cross-entropy with hard negative mining;
and the focal-loss alternative (``loss.name: focal``), sigmoid focal loss on every box.

Matching, encoding and mining run on the whole batch as tensor operations on the
batch's device, with no host sync, so the loss costs a few kernels rather than a
Python loop per image. Both terms are normalised by the number of positives in the
batch, as in the paper and torchvision.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import sigmoid_focal_loss

from multibox.boxes.coding import BoxCoder
from multibox.boxes.matching import gather_targets, match


def hard_negative_mask(cls_loss: Tensor, positive: Tensor, neg_pos_ratio: float) -> Tensor:
    """(N, A) bool: per image, the neg_pos_ratio x #positives background boxes with the highest loss."""
    negative_loss = cls_loss.detach().masked_fill(positive, -float("inf"))
    order = negative_loss.argsort(dim=1, descending=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    num_negative = neg_pos_ratio * positive.sum(dim=1, keepdim=True)
    return (rank < num_negative) & ~positive


class _MatchedLoss(nn.Module):
    """What both losses share: matching, the smooth L1 box term on positives, the weights."""

    def __init__(
        self,
        num_classes: int,
        iou_threshold: float,
        class_weights: list[float] | None,
        bbox_weight: float,
        cls_weight: float,
        coder: BoxCoder | None,
        background_weight: float | None,
    ) -> None:
        super().__init__()
        self.iou_threshold = iou_threshold
        self.bbox_weight = bbox_weight
        self.cls_weight = cls_weight
        self.coder = coder or BoxCoder()
        weights = None
        if class_weights is not None:
            if len(class_weights) != num_classes - 1:
                raise ValueError(f"class_weights needs {num_classes - 1} values (one per foreground class)")
            head = [] if background_weight is None else [background_weight]
            weights = torch.tensor([*head, *class_weights], dtype=torch.float32)
        self.register_buffer("class_weights", weights, persistent=False)

    def _match(
        self, box_regression: Tensor, default_cxcywh: Tensor, gt_boxes: Tensor, gt_labels: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(target labels (N, A), positives (N, A), their count, box loss over the positives' count)."""
        matched = match(gt_boxes, gt_labels, default_cxcywh, self.iou_threshold)
        target_boxes, target_labels = gather_targets(gt_boxes, gt_labels, matched)
        positive = target_labels > 0
        num_positives = positive.sum()
        normaliser = num_positives.clamp(min=1).to(torch.float32)
        target_offsets = self.coder.encode(target_boxes, default_cxcywh)
        bbox = F.smooth_l1_loss(box_regression.float(), target_offsets, reduction="none").sum(dim=-1)
        return target_labels, positive, num_positives, (bbox * positive).sum() / normaliser

    def _result(self, loss_bbox: Tensor, loss_cls: Tensor, num_positives: Tensor) -> dict[str, Tensor]:
        loss = self.bbox_weight * loss_bbox + self.cls_weight * loss_cls
        return {"loss": loss, "loss_bbox": loss_bbox, "loss_cls": loss_cls, "num_positives": num_positives}


class MultiBoxLoss(_MatchedLoss):
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
        super().__init__(num_classes, iou_threshold, class_weights, bbox_weight, cls_weight, coder, background_weight=1.0)
        self.neg_pos_ratio = neg_pos_ratio

    def forward(
        self, box_regression: Tensor, cls_logits: Tensor, default_cxcywh: Tensor, gt_boxes: Tensor, gt_labels: Tensor
    ) -> dict[str, Tensor]:
        """box_regression (N, A, 4), cls_logits (N, A, C), default boxes (A, 4) cxcywh,
        gt_boxes (N, G, 4) xyxy in the default boxes' coordinates, gt_labels (N, G) with 0 = padding.
        Returns ``loss`` (weighted sum), ``loss_bbox``, ``loss_cls`` and ``num_positives``."""
        target_labels, positive, num_positives, loss_bbox = self._match(box_regression, default_cxcywh, gt_boxes, gt_labels)
        num_classes = cls_logits.shape[-1]
        cls = F.cross_entropy(
            cls_logits.float().reshape(-1, num_classes), target_labels.reshape(-1), weight=self.class_weights, reduction="none"
        ).reshape(target_labels.shape)
        selected = positive | hard_negative_mask(cls, positive, self.neg_pos_ratio)
        loss_cls = (cls * selected).sum() / num_positives.clamp(min=1)
        return self._result(loss_bbox, loss_cls, num_positives)


class FocalLoss(_MatchedLoss):
    """Sigmoid focal loss (Lin et al., 2017) over all default boxes plus smooth L1 on the positives.

    RetinaNet / SSD-ResNet50-FPN's loss: instead of mining 3 negatives per positive, every default
    box contributes, and the (1 - p_t)^gamma factor mutes the tens of thousands of easy
    background boxes. Each foreground class is an independent sigmoid on a one-hot target;
    background boxes have all-zero targets. The network still outputs C = num_classes logits
    with column 0 for background; that column gets no loss (and no gradient), and detections
    must then be scored with ``sigmoid(logits[..., 1:])`` (``PostprocessSettings.score_activation``).
    Both terms are normalised by the number of positives in the batch.

    Args:
        num_classes: classes including background (the logits' last dimension).
        alpha: weight of positive targets; negatives get ``1 - alpha``.
        gamma: focusing exponent.
        iou_threshold: IoU at which a default box matches a ground-truth box.
        class_weights: optional weight per foreground class, multiplying that class's column.
        bbox_weight, cls_weight: weights of the two terms in ``loss``.
        coder: the box encoding (SSD variances by default).
    """

    def __init__(
        self,
        num_classes: int,
        alpha: float = 0.25,
        gamma: float = 2.0,
        iou_threshold: float = 0.5,
        class_weights: list[float] | None = None,
        bbox_weight: float = 1.0,
        cls_weight: float = 1.0,
        coder: BoxCoder | None = None,
    ) -> None:
        super().__init__(num_classes, iou_threshold, class_weights, bbox_weight, cls_weight, coder, background_weight=None)
        self.num_classes = num_classes
        self.alpha = alpha
        self.gamma = gamma

    def forward(
        self, box_regression: Tensor, cls_logits: Tensor, default_cxcywh: Tensor, gt_boxes: Tensor, gt_labels: Tensor
    ) -> dict[str, Tensor]:
        """Same inputs and outputs as :meth:`MultiBoxLoss.forward`."""
        target_labels, _, num_positives, loss_bbox = self._match(box_regression, default_cxcywh, gt_boxes, gt_labels)
        # One-hot over all C classes, then drop the background column: background boxes -> all zeros.
        targets = F.one_hot(target_labels, cls_logits.shape[-1])[..., 1:].to(torch.float32)
        cls = sigmoid_focal_loss(cls_logits[..., 1:].float(), targets, self.alpha, self.gamma, reduction="none")
        if self.class_weights is not None:
            cls = cls * self.class_weights
        loss_cls = cls.sum() / num_positives.clamp(min=1)
        return self._result(loss_bbox, loss_cls, num_positives)
