"""Models by name: default-box layouts, build_model's checks, feature_map_sizes."""

import dataclasses

import pytest
import torch

from multibox.boxes.anchors import default_boxes, make_layout
from multibox.errors import MultiboxError
from multibox.models import MODEL_NAMES, SSD, anchor_defaults, build_model, feature_map_sizes
from multibox.models.factory import AnchorDefaults

SMALL = "ssdlite320_mobilenet_v3_large"


def _small(aspect_ratios=None) -> SSD:
    return build_model(SMALL, 3, aspect_ratios or anchor_defaults(SMALL).aspect_ratios, width_mult=0.5)


def test_model_names() -> None:
    assert {"ssd300_vgg16", "ssdlite320_mobilenet_v3_large"} <= set(MODEL_NAMES)
    for name in MODEL_NAMES:
        assert isinstance(anchor_defaults(name), AnchorDefaults)


def test_anchor_defaults_are_torchvisions() -> None:
    vgg = anchor_defaults("ssd300_vgg16")
    assert vgg.aspect_ratios == [[2], [2, 3], [2, 3], [2, 3], [2], [2]]
    assert vgg.scales == [0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05]
    assert vgg.steps == [8, 16, 32, 64, 100, 300]
    lite = anchor_defaults(SMALL)
    assert lite.aspect_ratios == [[2, 3]] * 6
    assert (lite.scales, lite.min_scale, lite.max_scale, lite.steps) == (None, 0.2, 0.95, None)
    ssd512 = anchor_defaults("ssd512_vgg16")
    assert len(ssd512.aspect_ratios) == 7 and len(ssd512.scales) == 8 and ssd512.steps[-1] == 512


def test_anchor_defaults_returns_a_copy() -> None:
    anchor_defaults("ssd300_vgg16").aspect_ratios.append([9.0])
    assert len(anchor_defaults("ssd300_vgg16").aspect_ratios) == 6
    with pytest.raises(dataclasses.FrozenInstanceError):
        anchor_defaults("ssd300_vgg16").steps = None


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        (dict(name="yolo", num_classes=3, aspect_ratios=[[2]] * 6), "unknown model 'yolo'"),
        (dict(name=SMALL, num_classes=3, aspect_ratios=[[2]] * 5), "6 feature levels"),
        (dict(name="ssd300_vgg16", num_classes=3, aspect_ratios=[[2]] * 7), "6 feature levels"),
        (dict(name="ssd512_vgg16", num_classes=3, aspect_ratios=[[2]] * 6), "7 feature levels"),
        (dict(name="ssd300_vgg16", num_classes=3, aspect_ratios=[[2]] * 6, width_mult=0.5), "width_mult"),
        (dict(name=SMALL, num_classes=1, aspect_ratios=[[2]] * 6), "num_classes"),
        (dict(name=SMALL, num_classes=3, aspect_ratios=[[2], [-1.0]] + [[2]] * 4), "aspect_ratios[1]"),
    ],
)
def test_build_model_rejects_bad_arguments_in_one_line(kwargs, fragment) -> None:
    with pytest.raises(MultiboxError) as error:
        build_model(**kwargs)
    assert fragment in str(error.value) and "\n" not in str(error.value)


def test_unknown_name_errors_everywhere() -> None:
    with pytest.raises(MultiboxError, match="ssd300_vgg16"):
        anchor_defaults("ssd300")


def test_custom_aspect_ratios_size_the_heads() -> None:
    ratios = [[2.0], [2.0, 3.0, 4.0], [], [2.0], [2.0], [2.0]]
    model = _small(ratios)
    assert model.head.num_anchors == [4, 8, 2, 4, 4, 4]
    box_regression, cls_logits = model(torch.rand(2, 3, 128, 128))  # train mode: 1x1 maps need batch >= 2
    sizes = feature_map_sizes(model, (128, 128))
    assert box_regression.shape[1] == sum(h * w * a for (h, w), a in zip(sizes, [4, 8, 2, 4, 4, 4], strict=True))
    assert cls_logits.shape[-1] == 3


def test_outputs_line_up_with_default_boxes_on_a_non_square_input() -> None:
    model = _small().eval()
    size = (96, 160)
    sizes = feature_map_sizes(model, size)
    with torch.no_grad():
        real = model.backbone((torch.rand(1, 3, *size) - 0.5) / 0.5)
        box_regression, _ = model(torch.rand(1, 3, *size))
    assert sizes == [tuple(f.shape[-2:]) for f in real] == [(6, 10), (3, 5), (2, 3), (1, 2), (1, 1), (1, 1)]
    defaults = anchor_defaults(SMALL)
    layout = make_layout(
        defaults.aspect_ratios, defaults.scales, defaults.min_scale, defaults.max_scale, defaults.steps
    )
    assert default_boxes(layout, sizes, size).shape[0] == box_regression.shape[1]


def test_feature_map_sizes_leaves_the_model_alone() -> None:
    model = _small().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    feature_map_sizes(model, (128, 128))
    feature_map_sizes(model, (3000, 4000))
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) and after[k].device.type == "cpu" for k in before)
    assert [m.training for m in model.modules()] == modes
    assert all(p.grad is None for p in model.parameters())


def test_too_small_input_is_a_one_line_error() -> None:
    with torch.device("meta"):
        vgg = build_model("ssd300_vgg16", 3, anchor_defaults("ssd300_vgg16").aspect_ratios)
    with pytest.raises(MultiboxError) as error:
        feature_map_sizes(vgg, (64, 64))
    assert "64x64" in str(error.value) and "\n" not in str(error.value)
