"""Focal loss (loss.name: focal): the hand computation, sigmoid scoring, and a training step end to end."""

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import box_iou, sigmoid_focal_loss

from multibox.boxes.postprocess import PostprocessSettings, postprocess
from multibox.config import load_config
from multibox.engine.module import DetectionModule
from multibox.losses import FocalLoss, MultiBoxLoss

# Four default boxes tiling the unit square (cxcywh).
DEFAULTS = torch.tensor(
    [[0.25, 0.25, 0.5, 0.5], [0.75, 0.75, 0.5, 0.5], [0.25, 0.75, 0.5, 0.5], [0.75, 0.25, 0.5, 0.5]]
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _problem():
    g = torch.Generator().manual_seed(0)
    gt = torch.tensor(
        [
            [[0.02, 0.0, 0.5, 0.48], [0.0, 0.0, 0.0, 0.0]],  # image 0: class 2 on box 0
            [[0.5, 0.52, 1.0, 1.0], [0.0, 0.55, 0.45, 1.0]],
        ]
    )  # image 1: class 1 on box 1, class 2 on box 2
    labels = torch.tensor([[2, 0], [1, 2]])
    regression = torch.randn(2, 4, 4, generator=g)
    logits = torch.randn(2, 4, 3, generator=g, requires_grad=True)
    return gt, labels, regression, logits


def test_focal_loss_equals_the_hand_computation():
    gt, labels, regression, logits = _problem()
    out = FocalLoss(num_classes=3, alpha=0.25, gamma=2.0)(regression, logits, DEFAULTS, gt, labels)

    # By hand: positives (image, box, class) = (0, 0, 2), (1, 1, 1), (1, 2, 2); foreground columns 1, 2 only.
    targets = torch.zeros(2, 4, 2)
    targets[0, 0, 1] = targets[1, 1, 0] = targets[1, 2, 1] = 1.0
    expected_cls = sigmoid_focal_loss(logits[..., 1:], targets, alpha=0.25, gamma=2.0, reduction="sum") / 3
    p = torch.sigmoid(logits[..., 1:])
    p_t = torch.where(targets > 0, p, 1 - p)
    alpha_t = torch.where(targets > 0, 0.25, 0.75)
    torch.testing.assert_close(expected_cls, (-alpha_t * (1 - p_t) ** 2 * torch.log(p_t)).sum() / 3)

    def encode(box, d):  # SSD encoding, variances 0.1 / 0.2
        cx, cy, w, h = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, box[2] - box[0], box[3] - box[1]
        return torch.stack(
            [
                (cx - d[0]) / (0.1 * d[2]),
                (cy - d[1]) / (0.1 * d[3]),
                torch.log(w / d[2]) / 0.2,
                torch.log(h / d[3]) / 0.2,
            ]
        )

    pairs = [(0, 0, gt[0, 0]), (1, 1, gt[1, 0]), (1, 2, gt[1, 1])]
    expected_bbox = (
        sum(F.smooth_l1_loss(regression[i, a], encode(box, DEFAULTS[a]), reduction="sum") for i, a, box in pairs) / 3
    )

    assert out["num_positives"] == 3
    torch.testing.assert_close(out["loss_cls"], expected_cls)
    torch.testing.assert_close(out["loss_bbox"], expected_bbox)
    torch.testing.assert_close(out["loss"], expected_cls + expected_bbox)
    out["loss"].backward()
    assert torch.all(logits.grad[..., 0] == 0)  # the background logit is not trained
    assert torch.all(logits.grad[..., 1:] != 0)  # every box's foreground logits are (no mining)
    assert set(out) == set(MultiBoxLoss(3)(regression, logits, DEFAULTS, gt, labels))


def test_focal_weights_and_parameters():
    gt, labels, regression, logits = _problem()
    plain = FocalLoss(3)(regression, logits, DEFAULTS, gt, labels)
    weighted = FocalLoss(3, bbox_weight=2.0, cls_weight=0.5, class_weights=[1.0, 3.0])(
        regression, logits, DEFAULTS, gt, labels
    )
    torch.testing.assert_close(weighted["loss_bbox"], plain["loss_bbox"])
    assert weighted["loss_cls"] > plain["loss_cls"]
    torch.testing.assert_close(weighted["loss"], 2.0 * weighted["loss_bbox"] + 0.5 * weighted["loss_cls"])
    # gamma 0, alpha 0.5: half the binary cross-entropy.
    bce = FocalLoss(3, alpha=0.5, gamma=0.0)(regression, logits, DEFAULTS, gt, labels)["loss_cls"]
    targets = F.one_hot(torch.tensor([[2, 0, 0, 0], [0, 1, 2, 0]]), 3)[..., 1:].float()
    torch.testing.assert_close(
        bce, 0.5 * F.binary_cross_entropy_with_logits(logits[..., 1:], targets, reduction="sum") / 3
    )
    with pytest.raises(ValueError, match="2 values"):
        FocalLoss(3, class_weights=[1.0])


def test_sigmoid_scores_ignore_the_background_logit():
    logits = torch.tensor([[[10.0, 2.0, -5.0], [0.0, -5.0, -5.0], [-5.0, -5.0, 0.5]]])  # (1, 3 boxes, 3)
    defaults = torch.tensor([[0.2, 0.2, 0.2, 0.2], [0.5, 0.5, 0.2, 0.2], [0.8, 0.8, 0.2, 0.2]])
    sizes = torch.tensor([[100, 200]])
    sigmoid = postprocess(
        torch.zeros(1, 3, 4),
        logits,
        defaults,
        sizes,
        PostprocessSettings(score_threshold=0.5, score_activation="sigmoid"),
    )[0]
    softmax = postprocess(torch.zeros(1, 3, 4), logits, defaults, sizes, PostprocessSettings(score_threshold=0.5))[0]
    # Box 0: background logit 10 wins the softmax, but its class-1 sigmoid is 0.88.
    torch.testing.assert_close(sigmoid["scores"], torch.sigmoid(torch.tensor([2.0, 0.5])))
    assert sigmoid["labels"].tolist() == [1, 2]
    torch.testing.assert_close(sigmoid["boxes"][0], torch.tensor([20.0, 10.0, 60.0, 30.0]))  # xyxy in 200x100 pixels
    assert softmax["labels"].tolist() == [2]


def test_config_selects_focal_loss_and_sigmoid_scoring():
    config = load_config(
        None,
        [
            "model.name=custom",
            "anchors.box_sizes=[[16],[32],[64],[128]]",
            "data.input_size=[64,64]",
            "loss.name=focal",
            "loss.focal_gamma=1.5",
        ],
    )
    module = DetectionModule(config.to_dict(), ["a", "b"], [1, 2])
    assert isinstance(module.criterion, FocalLoss) and module.criterion.gamma == 1.5 and module.criterion.alpha == 0.25
    assert module.detector.settings.score_activation == "sigmoid"
    default = DetectionModule(
        load_config(
            None, ["model.name=custom", "anchors.box_sizes=[[16],[32],[64],[128]]", "data.input_size=[64,64]"]
        ).to_dict(),
        ["a"],
        [1],
    )
    assert isinstance(default.criterion, MultiBoxLoss) and default.detector.settings.score_activation == "softmax"


def test_fpn_training_step_with_focal_loss():
    torch.manual_seed(0)
    config = load_config(
        None,
        [
            "model.name=ssd_resnet50_fpn",
            "data.input_size=[128,128]",
            "loss.name=focal",
            "eval.score_threshold=0.001",
            "eval.max_detections=50",
        ],
    )
    module = DetectionModule(config.to_dict(), ["a", "b"], [1, 2])
    batch = {
        "images": torch.randint(0, 256, (2, 3, 128, 128), dtype=torch.uint8),
        "boxes": torch.tensor([[[0.1, 0.1, 0.5, 0.6]], [[0.3, 0.2, 0.9, 0.7]]]),
        "labels": torch.tensor([[1], [2]]),
    }
    losses, regression, logits = module._losses(batch)
    # The 0.01 prior keeps the thousands of background boxes quiet: about 1.1 per positive at the start.
    assert losses["num_positives"] >= 2 and 0.5 < losses["loss_cls"] < 2.0
    losses["loss"].backward()
    assert module.detector.model.head.classification_tower.predictor.weight.grad.abs().sum() > 0
    assert module.detector.model.backbone.body.conv1.weight.grad is not None

    detections = module.detector.postprocess(regression.detach(), logits.detach(), torch.tensor([[128, 128], [48, 64]]))
    scores = torch.sigmoid(logits.detach()[..., 1:])
    for det, size, image_scores in zip(detections, [(128, 128), (48, 64)], scores, strict=True):
        assert 0 < len(det["scores"]) <= 50
        assert det["scores"][0] == pytest.approx(image_scores.max().item())  # best box first, sigmoid score
        assert torch.all(det["scores"][:-1] >= det["scores"][1:])
        assert set(det["labels"].tolist()) <= {1, 2}
        assert (
            torch.all(det["boxes"] >= 0)
            and torch.all(det["boxes"][:, 2] <= size[1])
            and torch.all(det["boxes"][:, 3] <= size[0])
        )


def test_focal_training_finds_the_objects():
    """A small custom SSD overfits two images with the focal loss; sigmoid scoring then finds the boxes."""
    torch.manual_seed(0)
    config = load_config(
        None,
        [
            "model.name=custom",
            "model.width_mult=0.5",
            "model.head=ssd",
            "model.strides=[8,16,32]",
            "anchors.box_sizes=[[16, 24],[32, 48],[64]]",
            "data.input_size=[64,64]",
            "loss.name=focal",
            "model.norm_momentum=0.3",
        ],
    )
    module = DetectionModule(config.to_dict(), ["a", "b"], [1, 2])
    g = torch.Generator().manual_seed(0)
    batch = {
        "images": torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8, generator=g),
        "boxes": torch.tensor([[[0.1, 0.1, 0.5, 0.6]], [[0.3, 0.2, 0.9, 0.7]]]),
        "labels": torch.tensor([[1], [2]]),
    }
    optimizer = torch.optim.AdamW(module.parameters(), lr=3e-3)
    for _ in range(30):
        losses, _, _ = module._losses(batch)
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
    module.eval()
    with torch.no_grad():
        detections = module.detector.detect(batch["images"].float() / 255, torch.tensor([[64, 64], [64, 64]]))
    for det, box, label in zip(detections, batch["boxes"], batch["labels"], strict=True):
        assert det["labels"][0] == label[0]
        assert box_iou(det["boxes"][:1], box * 64).item() > 0.5
