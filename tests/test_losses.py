"""MultiBox loss against torchvision's SSD.compute_loss, plus weighting options."""

from types import SimpleNamespace

import pytest
import torch
from torchvision.models.detection._utils import BoxCoder as TorchvisionBoxCoder
from torchvision.models.detection._utils import SSDMatcher
from torchvision.models.detection.ssd import SSD as TorchvisionSSD
from torchvision.ops import box_convert, box_iou

from multibox.losses import MultiBoxLoss, hard_negative_mask


def _problem(seed: int = 0, num_classes: int = 4):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(500, 2, generator=g) * 0.7
    defaults_xyxy = torch.cat((xy, xy + torch.rand(500, 2, generator=g) * 0.3 + 0.02), dim=1)
    counts = [2, 4, 1]
    gt = torch.zeros(3, 4, 4)
    labels = torch.zeros(3, 4, dtype=torch.long)
    for i, c in enumerate(counts):
        xy = torch.rand(c, 2, generator=g) * 0.6
        gt[i, :c] = torch.cat((xy, xy + torch.rand(c, 2, generator=g) * 0.3 + 0.05), dim=1)
        labels[i, :c] = torch.randint(1, num_classes, (c,), generator=g)
    regression = torch.randn(3, 500, 4, generator=g)
    logits = torch.randn(3, 500, num_classes, generator=g)
    return defaults_xyxy, gt, labels, counts, regression, logits


def _torchvision_loss(defaults_xyxy, gt, labels, counts, regression, logits):
    fake_ssd = SimpleNamespace(box_coder=TorchvisionBoxCoder((10.0, 10.0, 5.0, 5.0)), neg_to_pos_ratio=3)
    targets = [{"boxes": gt[i, :c], "labels": labels[i, :c]} for i, c in enumerate(counts)]
    matcher = SSDMatcher(0.5)
    matched = [matcher(box_iou(t["boxes"], defaults_xyxy)) for t in targets]
    head = {"bbox_regression": regression, "cls_logits": logits}
    return TorchvisionSSD.compute_loss(fake_ssd, targets, head, [defaults_xyxy] * 3, matched)


def test_loss_equals_torchvision_compute_loss():
    defaults_xyxy, gt, labels, counts, regression, logits = _problem()
    ours = MultiBoxLoss(num_classes=4)(regression, logits, box_convert(defaults_xyxy, "xyxy", "cxcywh"), gt, labels)
    reference = _torchvision_loss(defaults_xyxy, gt, labels, counts, regression, logits)
    torch.testing.assert_close(ours["loss_bbox"], reference["bbox_regression"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours["loss_cls"], reference["classification"], rtol=1e-4, atol=1e-5)
    assert ours["num_positives"] >= sum(counts)


def test_term_weights_and_class_weights():
    defaults_xyxy, gt, labels, counts, regression, logits = _problem(seed=3)
    defaults = box_convert(defaults_xyxy, "xyxy", "cxcywh")
    plain = MultiBoxLoss(num_classes=4)(regression, logits, defaults, gt, labels)
    weighted = MultiBoxLoss(num_classes=4, bbox_weight=2.0, cls_weight=0.5)(regression, logits, defaults, gt, labels)
    torch.testing.assert_close(weighted["loss"], 2.0 * plain["loss_bbox"] + 0.5 * plain["loss_cls"])
    heavy = MultiBoxLoss(num_classes=4, class_weights=[5.0, 5.0, 5.0])(regression, logits, defaults, gt, labels)
    # Positives weigh 5x, negatives 1x, so the class term grows but by less than 5x.
    assert plain["loss_cls"] < heavy["loss_cls"] < 5 * plain["loss_cls"]
    torch.testing.assert_close(heavy["loss_bbox"], plain["loss_bbox"])
    with pytest.raises(ValueError, match="3 values"):
        MultiBoxLoss(num_classes=4, class_weights=[1.0])


def test_hard_negatives_are_the_highest_loss_background_boxes():
    loss = torch.tensor([[0.1, 0.9, 0.5, 0.3, 0.8, 0.2]])
    positive = torch.tensor([[False, True, False, False, False, False]])
    mask = hard_negative_mask(loss, positive, 2.0)
    assert mask.tolist() == [[False, False, True, False, True, False]]


def test_loss_backpropagates_and_is_finite_without_objects():
    defaults_xyxy, _, _, _, regression, logits = _problem()
    regression.requires_grad_(True)
    logits.requires_grad_(True)
    out = MultiBoxLoss(num_classes=4)(
        regression,
        logits,
        box_convert(defaults_xyxy, "xyxy", "cxcywh"),
        torch.zeros(3, 1, 4),
        torch.zeros(3, 1, dtype=torch.long),
    )
    assert out["num_positives"] == 0 and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert regression.grad is not None
