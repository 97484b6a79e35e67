"""Loss options: dynamic negatives (dns), the per-image minibatch cap, the GIoU box term and
class weights from label counts, each against a hand computation or torchvision."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import generalized_box_iou_loss

from multibox.config import load_config
from multibox.data.records import DetectionSet, ImageRecord
from multibox.engine.module import DetectionModule, resolve_class_weights
from multibox.errors import MultiboxError
from multibox.losses import (
    FocalLoss,
    MultiBoxLoss,
    build_criterion,
    cap_negatives,
    class_weights_from_counts,
    count_labels,
    hard_negative_mask,
    misclassified_negative_mask,
)

# Four default boxes tiling the unit square (cxcywh); the ground truth below matches boxes (0,0), (1,1), (1,2).
DEFAULTS = torch.tensor(
    [[0.25, 0.25, 0.5, 0.5], [0.75, 0.75, 0.5, 0.5], [0.25, 0.75, 0.5, 0.5], [0.75, 0.25, 0.5, 0.5]]
)
GT = torch.tensor([[[0.02, 0.0, 0.5, 0.48], [0.0, 0.0, 0.0, 0.0]], [[0.5, 0.52, 1.0, 1.0], [0.0, 0.55, 0.45, 1.0]]])
LABELS = torch.tensor([[2, 0], [1, 2]])
MATCHES = [(0, 0, GT[0, 0]), (1, 1, GT[1, 0]), (1, 2, GT[1, 1])]


def test_dns_keeps_the_misclassified_negatives_or_all_of_them():
    # Image 0: box 0 positive; negatives 1 and 3 predict a class, 2 and 4 predict background.
    # Image 1: no negative is misclassified, so every negative is kept.
    logits = torch.tensor(
        [
            [[0, 5, 0], [0, 1, 2], [3, 0, 0], [0, 4, 0], [9, 0, 0]],
            [[5, 0, 0], [0, 0, 7], [4, 1, 1], [2, 0, 0], [6, 0, 0]],
        ],
        dtype=torch.float32,
    )
    positive = torch.tensor([[True, False, False, False, False], [False, True, False, False, False]])
    mask = misclassified_negative_mask(logits, positive)
    assert mask.tolist() == [[False, True, False, True, False], [True, False, True, True, True]]


def test_minibatch_cap_keeps_positives_and_the_highest_loss_negatives():
    loss = torch.tensor([[0.1, 0.9, 0.5, 0.3, 0.8, 0.2], [0.4, 0.3, 0.2, 0.1, 0.6, 0.5]])
    positive = torch.tensor([[False, True, False, False, False, False], [True, True, True, False, False, False]])
    all_negatives = ~positive
    capped = cap_negatives(loss, positive, all_negatives, minibatch_size=3)
    # Image 0: 1 positive leaves room for 2 negatives (0.8, 0.5); image 1: 3 positives fill the cap.
    assert capped.tolist() == [[False, False, True, False, True, False], [False] * 6]
    hard = hard_negative_mask(loss, positive, 3.0)  # 3 and 9 negatives wanted; the cap of 3 wins
    assert (cap_negatives(loss, positive, hard, 3) == capped).all()


def _problem(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 4, 4, generator=g), torch.randn(2, 4, 3, generator=g)


def test_dns_loss_equals_the_hand_computation():
    regression, logits = _problem()
    logits[0, 1] = torch.tensor([0.0, 3.0, 0.0])  # image 0, negative box 1 misclassified as class 1
    logits[0, 2:] = torch.tensor([3.0, 0.0, 0.0])  # ... boxes 2, 3 correctly background
    logits[1, 0] = logits[1, 3] = torch.tensor([2.0, 0.0, 0.0])  # image 1: no misclassified negative -> both kept
    out = MultiBoxLoss(3, negatives="dns")(regression, logits, DEFAULTS, GT, LABELS)
    ce = F.cross_entropy(logits.reshape(-1, 3), torch.tensor([2, 0, 0, 0, 0, 1, 2, 0]), reduction="none").reshape(2, 4)
    kept = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    torch.testing.assert_close(out["loss_cls"], ce[kept].sum() / 3)
    hard = MultiBoxLoss(3, negatives="hard", neg_pos_ratio=1.0)(regression, logits, DEFAULTS, GT, LABELS)
    torch.testing.assert_close(hard["loss_bbox"], out["loss_bbox"])
    capped = MultiBoxLoss(3, negatives="dns", minibatch_size=1)(regression, logits, DEFAULTS, GT, LABELS)
    torch.testing.assert_close(capped["loss_cls"], ce[[0, 1, 1], [0, 1, 2]].sum() / 3)  # positives only


def _decode(offset: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """SSD decoding by hand (variances 0.1 / 0.2) to xyxy."""
    cx, cy = d[0] + 0.1 * offset[0] * d[2], d[1] + 0.1 * offset[1] * d[3]
    w, h = d[2] * torch.exp(0.2 * offset[2]), d[3] * torch.exp(0.2 * offset[3])
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


@pytest.mark.parametrize("loss_class", [MultiBoxLoss, FocalLoss])
def test_giou_box_term_equals_torchvision_on_the_positives(loss_class):
    regression, logits = _problem(1)
    regression.requires_grad_(True)
    out = loss_class(3, box="giou")(regression, logits, DEFAULTS, GT, LABELS)
    expected = sum(generalized_box_iou_loss(_decode(regression[i, a], DEFAULTS[a]), box) for i, a, box in MATCHES) / 3
    torch.testing.assert_close(out["loss_bbox"], expected)
    plain = loss_class(3)(regression, logits, DEFAULTS, GT, LABELS)
    torch.testing.assert_close(out["loss_cls"], plain["loss_cls"])
    out["loss_bbox"].backward()
    assert regression.grad[0, 1:].abs().sum() == 0 and regression.grad[0, 0].abs().sum() > 0  # positives only
    # A perfect prediction has zero GIoU loss.
    perfect = torch.zeros(2, 4, 4)
    for i, a, box in MATCHES:
        perfect[i, a] = loss_class(3).coder.encode(box[None], DEFAULTS[a : a + 1])[0]
    assert loss_class(3, box="giou")(perfect, logits, DEFAULTS, GT, LABELS)["loss_bbox"] < 1e-5


def test_class_weights_from_counts():
    weights = class_weights_from_counts([10, 30, 0, 20])
    inverse = np.array([1 / 10, 1 / 30, 1 / 20])
    assert weights == pytest.approx([*(inverse / inverse.mean())[:2], 1.0, (inverse / inverse.mean())[2]])
    assert np.mean([weights[i] for i in (0, 1, 3)]) == pytest.approx(1.0)
    assert class_weights_from_counts([5, 5]) == [1.0, 1.0]
    assert class_weights_from_counts([0, 0]) == [1.0, 1.0]


def _dataset() -> DetectionSet:
    boxes = np.array([[0, 0, 5, 5]] * 3, np.float32)
    records = [
        ImageRecord(1, "a.jpg", 10, 10, boxes, [1, 1, 3], iscrowd=[False, False, True]),
        ImageRecord(2, "b.jpg", 10, 10, boxes, [3, 1, 1], iscrowd=[False] * 3),
    ]
    return DetectionSet(records, ["cat", "dog", "bird"], [1, 2, 3])


def test_auto_class_weights_resolve_from_the_training_set():
    assert count_labels(_dataset()) == [4, 0, 1]  # the crowd box is not trained on, so not counted
    config = load_config(None, ["loss.class_weights=auto"])
    resolved = resolve_class_weights(config, _dataset())
    assert resolved.loss.class_weights == pytest.approx([0.4, 1.0, 1.6])
    assert config.loss.class_weights == "auto"  # the caller's config is left alone
    explicit = load_config(None, ["loss.class_weights=[1,2,3]"])
    assert resolve_class_weights(explicit, _dataset()) is explicit
    with pytest.raises(MultiboxError, match="loss.class_weights: auto"):
        build_criterion(config, 3)


def test_config_selects_the_loss_options():
    config = load_config(
        None,
        [
            "model.name=custom",
            "anchors.box_sizes=[[16],[32],[64],[128]]",
            "data.input_size=[64,64]",
            "loss.negatives=dns",
            "loss.minibatch_size=64",
            "loss.box=giou",
        ],
    )
    criterion = DetectionModule(config.to_dict(), ["a", "b"], [1, 2]).criterion
    assert (criterion.negatives, criterion.minibatch_size, criterion.box) == ("dns", 64, "giou")
    focal = build_criterion(load_config(None, ["loss.name=focal", "loss.box=giou"]), 2)
    assert isinstance(focal, FocalLoss) and focal.box == "giou"
