"""SSDLite-MobileNetV2 (pytorch-ssd's mb2-ssd-lite): layout, default boxes, split point, trainability."""

import itertools
import math

import pytest
import torch
from torch import nn
from torchvision.models import mobilenet_v2

from multibox.config import load_config
from multibox.models import anchor_defaults, build_model, feature_map_sizes
from multibox.models.detector import build_detector
from multibox.models.mobilenet_v2 import mobilenet_v2_extractor, ssdlite_mobilenet_v2

NAME = "ssdlite_mobilenet_v2"
SIZES_300 = [(19, 19), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]


def _pytorch_ssd_priors() -> torch.Tensor:
    """pytorch-ssd's ``generate_ssd_priors`` for its mobilenetv1_ssd_config (used by mb1-ssd and mb2-ssd-lite).

    Per level: feature size, shrinkage (px) and min/max box size (px) at 300x300; boxes per location:
    min square, sqrt(min*max) square, then (w*sqrt(r), h/sqrt(r)), (w/sqrt(r), h*sqrt(r)) for r in 2, 3.
    """
    specs = [
        (19, 16, 60, 105),
        (10, 32, 105, 150),
        (5, 64, 150, 195),
        (3, 100, 195, 240),
        (2, 150, 240, 285),
        (1, 300, 285, 330),
    ]
    priors = []
    for size, shrinkage, small, big in specs:
        scale = 300 / shrinkage
        for j, i in itertools.product(range(size), repeat=2):
            cx, cy = (i + 0.5) / scale, (j + 0.5) / scale
            priors.append([cx, cy, small / 300, small / 300])
            priors.append([cx, cy, math.sqrt(small * big) / 300, math.sqrt(small * big) / 300])
            for ratio in (2, 3):
                r = math.sqrt(ratio)
                priors.append([cx, cy, small / 300 * r, small / 300 / r])
                priors.append([cx, cy, small / 300 / r, small / 300 * r])
    return torch.tensor(priors, dtype=torch.float32).clamp(0.0, 1.0)  # pytorch-ssd clamps all four values


def test_default_anchors_are_pytorch_ssds() -> None:
    defaults = anchor_defaults(NAME)
    assert defaults.aspect_ratios == [[2, 3]] * 6
    assert defaults.scales == [0.2, 0.35, 0.5, 0.65, 0.8, 0.95, 1.1]  # 60, 105, ..., 330 px of 300
    assert defaults.steps == [16, 32, 64, 100, 150, 300]


def test_detector_at_300_has_pytorch_ssds_3000_priors() -> None:
    config = load_config(None, [f"model.name={NAME}", "data.input_size=[300,300]"])
    detector, spec = build_detector(config, num_classes=20)
    assert spec.feature_sizes == SIZES_300
    assert spec.boxes_per_level == [2166, 600, 150, 54, 24, 6]
    assert spec.num_boxes == 3000
    assert spec.layout.steps == (16, 32, 64, 100, 150, 300)  # nominal size: pytorch-ssd's shrinkage kept
    # Equal to pytorch-ssd's priors except one detail: pytorch-ssd also clamps the centres, and its
    # level-1 grid (10 cells of 32 px = 320 px) puts the last row/column's centres at 9.5 * 32 / 300
    # = 1.0133, which it moves to 1.0; multibox clips only widths and heights.
    reference = _pytorch_ssd_priors()
    ours = detector.default_boxes
    differ = (ours - reference).abs() > 1e-6
    assert differ.nonzero()[:, 0].unique().tolist() == [
        2166 + (y * 10 + x) * 6 + b for y in range(10) for x in range(10) if 9 in (x, y) for b in range(6)
    ]
    assert not differ[:, 2:].any()
    torch.testing.assert_close(ours[differ], torch.full((120,), 9.5 * 32 / 300))
    torch.testing.assert_close(ours[~differ], reference[~differ], atol=1e-6, rtol=0)
    box_regression, cls_logits = detector.eval()(torch.rand(1, 3, 300, 300))
    assert box_regression.shape == (1, 3000, 4) and cls_logits.shape == (1, 3000, 21)


def test_layout_and_parameter_count() -> None:
    model = ssdlite_mobilenet_v2(21)
    # pytorch-ssd's mb2-ssd-lite for VOC has 3,388,228: the 5,760 more are the biases of its head's
    # depthwise convs, which sit right before a BatchNorm (which cancels them), so they are left out here.
    assert sum(p.numel() for p in model.parameters()) == 3_382_468
    assert model.backbone.out_channels == [576, 1280, 512, 256, 256, 64]
    assert feature_map_sizes(model, (300, 300)) == SIZES_300
    assert model.head.num_anchors == [6] * 6
    # Image normalisation (x * 255 - 127) / 128.
    torch.testing.assert_close(model.image_mean.flatten(), torch.full((3,), 127 / 255))
    torch.testing.assert_close(model.image_std.flatten(), torch.full((3,), 128 / 255))
    # Depthwise-separable predictors on levels 0-4, a plain 1x1 conv on the last level.
    for head in (model.head.classification_head, model.head.regression_head):
        *separable, last = head.module_list
        assert all(block[0][0].groups == block[0][0].in_channels for block in separable)
        assert isinstance(last, nn.Conv2d) and last.kernel_size == (1, 1)
    # Extra blocks: linear bottlenecks with pytorch-ssd's expansion ratios (hidden = round(in * ratio)).
    hidden = [block.conv[0].out_channels for block in model.backbone.extra]
    assert hidden == [256, 128, 128, 64]


def test_width_mult_scales_the_backbone_only() -> None:
    model = ssdlite_mobilenet_v2(21, width_mult=0.5)
    assert model.backbone.out_channels == [288, 1280, 512, 256, 256, 64]  # 96 * 0.5 * 6; last conv stays 1280
    assert sum(p.numel() for p in model.parameters()) == 1_796_740


def test_the_split_keeps_every_backbone_layer() -> None:
    """Level 0 is features[14]'s expansion output; level 1 equals torchvision's whole ``features``."""
    torch.manual_seed(0)
    reference = mobilenet_v2(weights=None, width_mult=0.5).eval()
    torch.manual_seed(0)
    extractor = mobilenet_v2_extractor(width_mult=0.5).eval()
    images = torch.rand(2, 3, 96, 64)
    with torch.no_grad():
        levels = extractor(images)
        expansion = reference.features[14].conv[0](reference.features[:14](images))
        torch.testing.assert_close(levels[0], expansion)
        torch.testing.assert_close(levels[1], reference.features(images))
    assert levels[0].shape[-2:] == (6, 4) and levels[1].shape[-2:] == (3, 2)  # strides 16 and 32


def test_non_square_input() -> None:
    model = build_model(NAME, 3, anchor_defaults(NAME).aspect_ratios, width_mult=0.5).eval()
    sizes = feature_map_sizes(model, (128, 192))
    assert sizes == [(8, 12), (4, 6), (2, 3), (1, 2), (1, 1), (1, 1)]
    with torch.no_grad():
        real = model.backbone(torch.rand(1, 3, 128, 192))
        box_regression, cls_logits = model(torch.rand(1, 3, 128, 192))
    assert [tuple(f.shape[-2:]) for f in real] == sizes
    assert box_regression.shape == (1, 130 * 6, 4) and cls_logits.shape == (1, 780, 3)


def test_small_model_trains() -> None:
    """Width 0.5 at 128x128, batch 2: forward, loss, backward; every parameter gets a finite gradient."""
    torch.manual_seed(0)
    model = build_model(NAME, 4, [[2, 3]] * 6, width_mult=0.5).train()
    assert feature_map_sizes(model, (128, 128)) == [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1), (1, 1)]
    box_regression, cls_logits = model(torch.rand(2, 3, 128, 128))
    assert box_regression.shape == (2, 522, 4) and cls_logits.shape == (2, 522, 4)  # 87 locations * 6
    loss = box_regression.square().mean() + nn.functional.cross_entropy(
        cls_logits.flatten(0, 1), torch.randint(0, 4, (2 * 522,))
    )
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name


@pytest.mark.parametrize("num_anchors", [[4, 6, 6, 6, 4, 4], [2, 2, 2, 2, 2, 2]])
def test_custom_anchor_counts_size_the_heads(num_anchors: list[int]) -> None:
    model = ssdlite_mobilenet_v2(3, width_mult=0.5, num_anchors=num_anchors).eval()
    with torch.no_grad():
        box_regression, _ = model(torch.rand(1, 3, 128, 128))
    sizes = [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1), (1, 1)]
    assert box_regression.shape[1] == sum(h * w * a for (h, w), a in zip(sizes, num_anchors, strict=True))


def test_wrong_number_of_anchor_counts() -> None:
    with pytest.raises(ValueError, match="6 feature levels but 5"):
        ssdlite_mobilenet_v2(3, num_anchors=[6] * 5)
