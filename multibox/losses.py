"""MultiBox loss: a box term on matched boxes plus cross-entropy on positives and sampled
negatives; and the focal-loss alternative (``loss.name: focal``), sigmoid focal loss on every box.

Matching, encoding and negative sampling run on the whole batch as tensor operations on the
batch's device, with no host sync, so the loss costs a few kernels rather than a
Python loop per image. Both terms are normalised by the number of positives in the
batch, as in the paper and torchvision.

Options (``loss.*`` in the config): the box term is smooth L1 on encoded offsets or
generalized IoU on decoded boxes (``box``); negatives are the ``neg_pos_ratio`` x positives
hardest (``negatives: hard``) or every misclassified one (``dns``), optionally capped per
image by ``minibatch_size``; ``class_weights`` can come from the training set's label
counts (:func:`class_weights_from_counts`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

from multibox.boxes.coding import BoxCoder
from multibox.boxes.matching import gather_targets, ignored_defaults, match
from multibox.config import Config
from multibox.data.records import DetectionSet
from multibox.errors import MultiboxError


def _rank_by_loss(cls_loss: Tensor, candidates: Tensor) -> Tensor:
    """(N, A) int: each candidate's rank (0 = highest loss) among its image's candidates; others rank last."""
    candidate_loss = cls_loss.detach().masked_fill(~candidates, -float("inf"))
    order = candidate_loss.argsort(dim=1, descending=True)
    positions = torch.arange(order.shape[1], device=order.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, positions)


def hard_negative_mask(cls_loss: Tensor, positive: Tensor, neg_pos_ratio: float) -> Tensor:
    """(N, A) bool: per image, the neg_pos_ratio x #positives background boxes with the highest loss."""
    num_negative = neg_pos_ratio * positive.sum(dim=1, keepdim=True)
    return (_rank_by_loss(cls_loss, ~positive) < num_negative) & ~positive


def misclassified_negative_mask(cls_logits: Tensor, positive: Tensor) -> Tensor:
    """(N, A) bool: the scale-aware SSD project's dynamic negatives, the background boxes whose arg-max class is not
    background; in an image that has none, all its background boxes (so it still learns background)."""
    negative = ~positive
    wrong = negative & (cls_logits.detach().argmax(dim=-1) != 0)
    return torch.where(wrong.any(dim=1, keepdim=True), wrong, negative)


def cap_negatives(cls_loss: Tensor, positive: Tensor, negatives: Tensor, minibatch_size: int) -> Tensor:
    """Keep at most minibatch_size - #positives of `negatives` per image, highest loss first
    (positives always stay in, so an image with more positives than the cap keeps no negative)."""
    room = (minibatch_size - positive.sum(dim=1, keepdim=True)).clamp(min=0)
    return negatives & (_rank_by_loss(cls_loss, negatives) < room)


def count_labels(dataset: DetectionSet) -> list[int]:
    """Boxes per foreground class (labels 1..K) that training sees: crowd boxes are left out, as the loader does."""
    labels = [record.labels[~record.iscrowd] for record in dataset.records]
    flat = np.concatenate(labels) if labels else np.zeros(0, np.int64)
    return np.bincount(flat, minlength=dataset.num_classes + 1)[1:].tolist()


def class_weights_from_counts(counts: Sequence[int]) -> list[float]:
    """Inverse-frequency weight per class, normalised to mean 1 over the classes that have boxes.

    A class with no training boxes gets weight 1 (neutral): it contributes no positives, so its
    weight only matters if it appears later (a fine-tune, a new val set), and an inverse of zero
    would be infinite.
    """
    counts_array = np.asarray(counts, dtype=np.float64)
    present = counts_array > 0
    if not present.any():
        return [1.0] * len(counts_array)
    inverse = np.where(present, 1.0 / np.where(present, counts_array, 1.0), 0.0)
    weights = np.where(present, inverse / inverse[present].mean(), 1.0)
    return [round(float(w), 6) for w in weights]


BoxLoss = Literal["smooth_l1", "giou"]


class _MatchedLoss(nn.Module):
    """What both losses share: matching, the box term on positives, the weights."""

    class_weights: Tensor | None  # a buffer (None: unweighted), so it follows the module's device

    def __init__(
        self,
        num_classes: int,
        iou_threshold: float,
        class_weights: list[float] | None,
        bbox_weight: float,
        cls_weight: float,
        coder: BoxCoder | None,
        background_weight: float | None,
        box: BoxLoss = "smooth_l1",
    ) -> None:
        super().__init__()
        if box not in ("smooth_l1", "giou"):
            raise ValueError(f"box loss must be smooth_l1 or giou, got {box!r}")
        self.box = box
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
        return (
            target_labels,
            positive,
            num_positives,
            self._box_loss(box_regression, default_cxcywh, target_boxes, positive) / normaliser,
        )

    def _ignored(self, default_cxcywh: Tensor, gt_boxes: Tensor, gt_labels: Tensor, positive: Tensor) -> Tensor | None:
        """(N, A) default boxes on ignore regions (labels < 0, see multibox.data.tiles), None when there are none."""
        if not bool((gt_labels < 0).any()):
            return None
        return ignored_defaults(gt_boxes, gt_labels, default_cxcywh, self.iou_threshold) & ~positive

    def _box_loss(
        self, box_regression: Tensor, default_cxcywh: Tensor, target_boxes: Tensor, positive: Tensor
    ) -> Tensor:
        """Sum over positives of smooth L1 on encoded offsets, or of the GIoU loss on decoded xyxy boxes."""
        if self.box == "giou":
            predicted = self.coder.decode(box_regression.float(), default_cxcywh)
            per_box = generalized_box_iou_loss(predicted, target_boxes.float(), reduction="none")
        else:
            target_offsets = self.coder.encode(target_boxes, default_cxcywh)
            per_box = F.smooth_l1_loss(box_regression.float(), target_offsets, reduction="none").sum(dim=-1)
        # where, not a product: background rows (degenerate targets) must not leak into the gradient.
        return torch.where(positive, per_box, torch.zeros_like(per_box)).sum()

    def _result(self, loss_bbox: Tensor, loss_cls: Tensor, num_positives: Tensor) -> dict[str, Tensor]:
        loss = self.bbox_weight * loss_bbox + self.cls_weight * loss_cls
        return {"loss": loss, "loss_bbox": loss_bbox, "loss_cls": loss_cls, "num_positives": num_positives}


class MultiBoxLoss(_MatchedLoss):
    """Loss of an SSD's raw outputs against padded ground truth, given the default boxes.

    The classification term covers every positive plus the sampled negatives: ``hard`` keeps the
    neg_pos_ratio x #positives highest-loss ones per image (the paper's), ``dns`` every negative
    the model misclassifies (:func:`misclassified_negative_mask`). ``minibatch_size`` then caps
    the boxes per image (positives first, then negatives by loss).
    """

    def __init__(
        self,
        num_classes: int,
        neg_pos_ratio: float = 3.0,
        iou_threshold: float = 0.5,
        class_weights: list[float] | None = None,
        bbox_weight: float = 1.0,
        cls_weight: float = 1.0,
        coder: BoxCoder | None = None,
        negatives: Literal["hard", "dns"] = "hard",
        minibatch_size: int | None = None,
        box: BoxLoss = "smooth_l1",
    ) -> None:
        super().__init__(
            num_classes, iou_threshold, class_weights, bbox_weight, cls_weight, coder, background_weight=1.0, box=box
        )
        if negatives not in ("hard", "dns"):
            raise ValueError(f"negatives must be hard or dns, got {negatives!r}")
        self.neg_pos_ratio = neg_pos_ratio
        self.negatives = negatives
        self.minibatch_size = minibatch_size

    def negative_mask(self, cls_loss: Tensor, cls_logits: Tensor, positive: Tensor) -> Tensor:
        """(N, A) bool: the background boxes that enter the classification term."""
        if self.negatives == "dns":
            negatives = misclassified_negative_mask(cls_logits, positive)
        else:
            negatives = hard_negative_mask(cls_loss, positive, self.neg_pos_ratio)
        if self.minibatch_size is not None:
            negatives = cap_negatives(cls_loss, positive, negatives, self.minibatch_size)
        return negatives

    def forward(
        self, box_regression: Tensor, cls_logits: Tensor, default_cxcywh: Tensor, gt_boxes: Tensor, gt_labels: Tensor
    ) -> dict[str, Tensor]:
        """box_regression (N, A, 4), cls_logits (N, A, C), default boxes (A, 4) cxcywh,
        gt_boxes (N, G, 4) xyxy in the default boxes' coordinates, gt_labels (N, G) with 0 = padding.
        Returns ``loss`` (weighted sum), ``loss_bbox``, ``loss_cls`` and ``num_positives``."""
        target_labels, positive, num_positives, loss_bbox = self._match(
            box_regression, default_cxcywh, gt_boxes, gt_labels
        )
        num_classes = cls_logits.shape[-1]
        cls = F.cross_entropy(
            cls_logits.float().reshape(-1, num_classes),
            target_labels.reshape(-1),
            weight=self.class_weights,
            reduction="none",
        ).reshape(target_labels.shape)
        ignored = self._ignored(default_cxcywh, gt_boxes, gt_labels, positive)
        if ignored is not None:  # ignore regions (tiled training): no loss, never a mined negative
            cls = cls.masked_fill(ignored, 0.0)
        selected = positive | self.negative_mask(cls, cls_logits, positive)
        if ignored is not None:
            selected &= ~ignored
        loss_cls = (cls * selected).sum() / num_positives.clamp(min=1)
        return self._result(loss_bbox, loss_cls, num_positives)


class FocalLoss(_MatchedLoss):
    """Sigmoid focal loss (Lin et al., 2017) over all default boxes plus the box term on the positives.

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
        box: smooth_l1 on encoded offsets or giou on decoded boxes.
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
        box: BoxLoss = "smooth_l1",
    ) -> None:
        super().__init__(
            num_classes, iou_threshold, class_weights, bbox_weight, cls_weight, coder, background_weight=None, box=box
        )
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
        ignored = self._ignored(default_cxcywh, gt_boxes, gt_labels, target_labels > 0)
        if ignored is not None:  # ignore regions (tiled training) add nothing
            cls = cls.masked_fill(ignored[..., None], 0.0)
        if self.class_weights is not None:
            cls = cls * self.class_weights
        loss_cls = cls.sum() / num_positives.clamp(min=1)
        return self._result(loss_bbox, loss_cls, num_positives)


def build_criterion(config: Config, num_classes: int) -> nn.Module:
    """The configured loss for `num_classes` foreground classes (loss.class_weights already numbers)."""
    loss = config.loss
    if loss.class_weights == "auto":
        raise MultiboxError(
            "loss.class_weights: auto must be resolved from the training set first "
            "(resolve_class_weights; `multibox train` does it)"
        )
    if loss.name == "focal":  # the detector's postprocess then scores with sigmoids (build_detector)
        return FocalLoss(
            num_classes + 1,
            loss.focal_alpha,
            loss.focal_gamma,
            loss.iou_threshold,
            loss.class_weights,
            loss.bbox_weight,
            loss.cls_weight,
            box=loss.box,
        )
    return MultiBoxLoss(
        num_classes + 1,
        loss.neg_pos_ratio,
        loss.iou_threshold,
        loss.class_weights,
        loss.bbox_weight,
        loss.cls_weight,
        negatives=loss.negatives,
        minibatch_size=loss.minibatch_size,
        box=loss.box,
    )
