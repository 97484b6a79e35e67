"""SSD-MobileNetV1 (pytorch-ssd's mb1-ssd): backbone, layout, default boxes, trainability."""

import pytest
import torch
from torch import nn

from multibox.config import load_config
from multibox.models import anchor_defaults, build_model, feature_map_sizes
from multibox.models.detector import build_detector
from multibox.models.heads import SSDHead
from multibox.models.mobilenet_v1 import mobilenet_v1_features, ssd_mobilenet_v1

NAME = "ssd_mobilenet_v1"
SIZES_300 = [(19, 19), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]


def test_mobilenet_v1_backbone() -> None:
    features = mobilenet_v1_features()
    assert len(features) == 14  # stem + 13 depthwise-separable blocks
    # pytorch-ssd's MobileNetV1(...).model: 3x3 conv 3->32 (no bias) + 13 x (dw 3x3 + BN, pw 1x1 + BN).
    assert sum(p.numel() for p in features.parameters()) == 3_206_976
    channels = [features[0].out_channels] + [block[1].out_channels for block in features[1:]]
    assert channels == [32, 64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024]
    strides = [features[0][0].stride[0]] + [block[0][0].stride[0] for block in features[1:]]
    assert strides == [2, 1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1]
    assert all(block[0][0].groups == block[0][0].in_channels for block in features[1:])
    assert all(isinstance(block[1][2], nn.ReLU) for block in features[1:])


def test_width_mult_and_min_depth() -> None:
    half = mobilenet_v1_features(0.5)
    assert [block[1].out_channels for block in half[1:]] == [32, 64, 64, 128, 128] + [256] * 6 + [512, 512]
    assert half[0].out_channels == 16
    tiny = mobilenet_v1_features(0.1)
    assert tiny[0].out_channels == 8 and tiny[1][1].out_channels == 8  # int(3.2), int(6.4) -> min depth 8
    assert tiny[13][1].out_channels == 102
    model = ssd_mobilenet_v1(21, width_mult=0.5)
    assert model.backbone.out_channels == [256, 512, 512, 256, 256, 256]  # extras keep their widths
    assert sum(p.numel() for p in model.parameters()) == 5_912_740


def test_default_anchors_are_pytorch_ssds() -> None:
    defaults = anchor_defaults(NAME)
    assert defaults.aspect_ratios == [[2, 3]] * 6
    assert defaults.scales == [0.2, 0.35, 0.5, 0.65, 0.8, 0.95, 1.1]
    assert defaults.steps == [16, 32, 64, 100, 150, 300]


def test_detector_at_300_has_3000_boxes() -> None:
    config = load_config(None, [f"model.name={NAME}", "data.input_size=[300,300]"])
    detector, spec = build_detector(config, num_classes=20)
    assert spec.feature_sizes == SIZES_300
    assert spec.boxes_per_level == [2166, 600, 150, 54, 24, 6]
    assert spec.num_boxes == 3000
    assert spec.layout.steps == (16, 32, 64, 100, 150, 300)
    # First prior: centre 8/300 (half a 16-px cell), 60-px square; last level: centred, clipped to the image.
    torch.testing.assert_close(detector.default_boxes[0], torch.tensor([8 / 300, 8 / 300, 0.2, 0.2]))
    torch.testing.assert_close(detector.default_boxes[-6], torch.tensor([0.5, 0.5, 0.95, 0.95]))
    box_regression, cls_logits = detector.eval()(torch.rand(1, 3, 300, 300))
    assert box_regression.shape == (1, 3000, 4) and cls_logits.shape == (1, 3000, 21)


def test_layout_and_parameter_count() -> None:
    model = ssd_mobilenet_v1(21)
    # Exactly pytorch-ssd's mb1-ssd for VOC: backbone 3,206,976 + extras 2,459,520 + 3x3 heads 3,802,500.
    assert sum(p.numel() for p in model.backbone.features.parameters()) == 3_206_976
    assert sum(p.numel() for p in model.backbone.extra.parameters()) == 2_459_520
    assert sum(p.numel() for p in model.head.parameters()) == 3_802_500
    assert sum(p.numel() for p in model.parameters()) == 9_468_996
    assert model.backbone.out_channels == [512, 1024, 512, 256, 256, 256]
    assert feature_map_sizes(model, (300, 300)) == SIZES_300
    assert isinstance(model.head, SSDHead) and model.head.num_anchors == [6] * 6
    torch.testing.assert_close(model.image_mean.flatten(), torch.full((3,), 127 / 255))
    torch.testing.assert_close(model.image_std.flatten(), torch.full((3,), 128 / 255))


def test_non_square_input() -> None:
    model = build_model(NAME, 3, anchor_defaults(NAME).aspect_ratios, width_mult=0.5).eval()
    sizes = feature_map_sizes(model, (128, 192))
    assert sizes == [(8, 12), (4, 6), (2, 3), (1, 2), (1, 1), (1, 1)]
    with torch.no_grad():
        real = model.backbone(torch.rand(1, 3, 128, 192))
        box_regression, cls_logits = model(torch.rand(1, 3, 128, 192))
    assert [tuple(f.shape[-2:]) for f in real] == sizes
    assert box_regression.shape == (1, 780, 4) and cls_logits.shape == (1, 780, 3)


def test_small_model_trains() -> None:
    """Width 0.5 at 128x128, batch 2: forward, loss, backward; every parameter gets a finite gradient."""
    torch.manual_seed(0)
    model = build_model(NAME, 4, [[2, 3]] * 6, width_mult=0.5).train()
    box_regression, cls_logits = model(torch.rand(2, 3, 128, 128))
    assert box_regression.shape == (2, 522, 4) and cls_logits.shape == (2, 522, 4)
    loss = box_regression.square().mean() + nn.functional.cross_entropy(
        cls_logits.flatten(0, 1), torch.randint(0, 4, (2 * 522,))
    )
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name


def test_wrong_number_of_anchor_counts() -> None:
    with pytest.raises(ValueError, match="6 feature levels but 7"):
        ssd_mobilenet_v1(3, num_anchors=[6] * 7)
