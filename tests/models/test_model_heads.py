"""Heads: torchvision's output order and state-dict names, and their initialisation."""

import torch
from torchvision.models.detection.ssd import SSDHead as TorchvisionSSDHead
from torchvision.models.detection.ssdlite import SSDLiteHead as TorchvisionSSDLiteHead

from multibox.models.heads import SSDHead, SSDLiteHead
from multibox.models.mobilenet_v3 import default_norm_layer

IN_CHANNELS = [8, 16, 4]
NUM_ANCHORS = [4, 6, 2]
SIZES = [(5, 7), (3, 4), (1, 1)]


def _features(batch: int = 2) -> list[torch.Tensor]:
    return [torch.randn(batch, c, h, w) for c, (h, w) in zip(IN_CHANNELS, SIZES, strict=True)]


def test_ssd_head_matches_torchvision() -> None:
    ours, theirs = SSDHead(IN_CHANNELS, NUM_ANCHORS, 5), TorchvisionSSDHead(IN_CHANNELS, NUM_ANCHORS, 5)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    features = _features()
    box_regression, cls_logits = ours(features)
    reference = theirs(features)
    torch.testing.assert_close(box_regression, reference["bbox_regression"])
    torch.testing.assert_close(cls_logits, reference["cls_logits"])
    assert box_regression.shape == (2, sum(h * w * a for (h, w), a in zip(SIZES, NUM_ANCHORS, strict=True)), 4)


def test_ssdlite_head_matches_torchvision() -> None:
    norm = default_norm_layer()
    ours = SSDLiteHead(IN_CHANNELS, NUM_ANCHORS, 5, norm)
    theirs = TorchvisionSSDLiteHead(IN_CHANNELS, NUM_ANCHORS, 5, norm)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    ours.load_state_dict(theirs.state_dict(), strict=True)
    ours.eval(), theirs.eval()
    features = _features()
    box_regression, cls_logits = ours(features)
    reference = theirs(features)
    torch.testing.assert_close(box_regression, reference["bbox_regression"])
    torch.testing.assert_close(cls_logits, reference["cls_logits"])


def test_order_is_level_then_row_major_location_then_box() -> None:
    """Row n of the output is level-major, then y, then x, then box (the default boxes' order)."""
    head = SSDHead([1, 1], [2, 3], num_classes=2)
    with torch.no_grad():
        for conv in head.regression_head.module_list:
            conv.weight.zero_()
            conv.weight[:, 0, 1, 1] = 1.0  # each output channel copies the input at its location...
            conv.bias.copy_(torch.arange(conv.out_channels) * 1000.0)  # ...plus 1000 * channel
    sizes = [(2, 3), (1, 2)]
    features = [torch.arange(h * w, dtype=torch.float32).view(1, 1, h, w) for h, w in sizes]
    box_regression, _ = head(features)
    expected = []
    for (h, w), boxes in zip(sizes, [2, 3], strict=True):
        for location in range(h * w):  # y * w + x
            for box in range(boxes):
                expected.append([location + 1000.0 * (box * 4 + k) for k in range(4)])
    torch.testing.assert_close(box_regression[0], torch.tensor(expected))


def test_initialisation() -> None:
    head = SSDHead([256], [4], 3)
    conv = head.classification_head.module_list[0]
    bound = (6 / ((256 + 12) * 9)) ** 0.5  # xavier-uniform bound
    assert conv.weight.abs().max() <= bound and conv.weight.abs().max() > 0.9 * bound
    assert torch.all(conv.bias == 0)
    lite = SSDLiteHead([256], [6], 3, default_norm_layer())
    depthwise = lite.regression_head.module_list[0][0][0].weight
    assert abs(depthwise.std().item() - 0.03) < 0.005
    assert head.num_anchors == [4] and head.num_classes == 3
