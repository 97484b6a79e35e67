"""model.name=custom: scale-aware SSD's backbone taps, extra levels, explicit pixel box sizes."""

from pathlib import Path

import pytest
import torch

from multibox.config import load_config
from multibox.errors import MultiboxError
from multibox.models import build_model, feature_map_sizes
from multibox.models.custom import CustomFeatureExtractor
from multibox.models.detector import build_detector
from multibox.models.heads import SSDHead, SSDLiteHead

SEED_000 = Path(__file__).resolve().parents[2] / "multibox" / "configs" / "scale_aware_mobilenet_v2.yaml"


pytestmark = pytest.mark.usefixtures("one_thread")


def test_seed_000_config_gives_one_pixel_sized_box_per_location():
    config = load_config(SEED_000)
    assert (config.model.backbone, config.model.strides, config.model.head) == (
        "mobilenet_v2",
        [8, 16, 32, 64],
        "ssdlite",
    )
    assert config.data.val_split == 0.15
    detector, spec = build_detector(config, 3)
    assert spec.feature_sizes == [(64, 64), (32, 32), (16, 16), (8, 8)]
    assert spec.layout.boxes_per_location() == [1, 1, 1, 1] == detector.model.head.num_anchors
    assert spec.num_boxes == 64 * 64 + 32 * 32 + 16 * 16 + 8 * 8 == 5440 == detector.default_boxes.shape[0]
    sizes = detector.default_boxes[:, 2:] * 512
    starts = [0, 4096, 5120, 5376, 5440]
    for level, size in enumerate([25.0, 38.0, 58.0, 87.0]):
        level_sizes = sizes[starts[level] : starts[level + 1]]
        torch.testing.assert_close(level_sizes, torch.full_like(level_sizes, size))
    torch.testing.assert_close(detector.default_boxes[0, :2] * 512, torch.tensor([4.0, 4.0]))  # stride-8 centre
    # Taps at the last layer of each stride: 32 ch (features[:7]), 96 (features[:14]), 1280 (features), extra 256.
    assert detector.model.backbone.out_channels == [32, 96, 1280, 256]
    assert isinstance(detector.model.head, SSDLiteHead)


def test_outputs_line_up_with_default_boxes_on_a_non_square_input():
    config = load_config(SEED_000, ["data.input_size=[96,160]", "model.width_mult=0.5"])
    detector, spec = build_detector(config, 2)
    assert spec.feature_sizes == [(12, 20), (6, 10), (3, 5), (2, 3)]
    detector.eval()
    with torch.no_grad():
        features = detector.model.backbone(torch.rand(1, 3, 96, 160))
        regression, logits = detector(torch.rand(1, 3, 96, 160))
    assert [tuple(f.shape[-2:]) for f in features] == spec.feature_sizes
    assert regression.shape == (1, spec.num_boxes, 4) and logits.shape == (1, spec.num_boxes, 3)


def test_resnet50_backbone_with_five_levels_and_an_ssd_head():
    config = load_config(
        None,
        [
            "model.name=custom",
            "model.backbone=resnet50",
            "model.strides=[8,16,32,64,128]",
            "model.head=ssd",
            "data.input_size=[256,256]",
            "anchors.box_sizes=[[24,32],[48],[96],[160],[224]]",
            "anchors.aspect_ratios=[[2],[2],[],[],[3]]",
        ],
    )
    detector, spec = build_detector(config, 4)
    assert spec.feature_sizes == [(32, 32), (16, 16), (8, 8), (4, 4), (2, 2)]
    # Explicit sizes: each size's square plus 2 boxes per ratio.
    assert spec.layout.boxes_per_location() == [6, 3, 1, 1, 3] == detector.model.head.num_anchors
    assert detector.model.backbone.out_channels == [512, 1024, 2048, 256, 256]
    assert isinstance(detector.model.head, SSDHead)
    detector.train()
    regression, logits = detector(torch.rand(2, 3, 64, 64))
    assert regression.shape[1] == 6 * 64 + 3 * 16 + 4 + 1 + 3


@pytest.mark.parametrize(
    ("backbone", "channels"),
    [("mobilenet_v3_large", [40, 112, 960, 256]), ("vgg16", [512, 512, 512, 256])],
)
def test_other_backbones_on_the_meta_device(backbone, channels):
    with torch.device("meta"):  # shapes only: VGG16's classifier alone would take seconds to initialise
        model = build_model("custom", 3, [[]] * 4, num_anchors=[1] * 4, backbone=backbone, strides=[8, 16, 32, 64])
    assert model.backbone.out_channels == channels
    assert feature_map_sizes(model, (512, 512)) == [(64, 64), (32, 32), (16, 16), (8, 8)]


def test_backbone_stops_at_the_deepest_stride_needed():
    shallow = CustomFeatureExtractor("mobilenet_v2", [8, 16], width_mult=0.5)
    assert shallow.stage_strides == [8, 16] and len(shallow.extra) == 0
    skipping = CustomFeatureExtractor("mobilenet_v2", [16, 128], width_mult=0.5)
    assert skipping.stage_strides == [8, 16, 32] and skipping.extra_strides == [64, 128]
    outputs = skipping.eval()(torch.rand(1, 3, 128, 128))
    assert [tuple(o.shape[-2:]) for o in outputs] == [(8, 8), (1, 1)]


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["model.strides=[4,8,16]"], "model.strides: mobilenet_v2 cannot give stride 4"),
        (["model.strides=[8,24,32]"], "model.strides"),
        (["model.strides=[16,8,32,64]"], "strictly increasing"),
        (["model.strides=[8,16,32]"], "4 lists of ratios"),  # anchors have 4 levels, strides 3
        (["model.backbone=resnet50", "model.width_mult=0.5"], "model.width_mult"),
    ],
)
def test_bad_options_are_one_line_errors(overrides, fragment):
    config = load_config(SEED_000, overrides)
    with pytest.raises(MultiboxError) as error:
        build_detector(config, 3)
    assert fragment in str(error.value) and "\n" not in str(error.value)


def test_custom_needs_explicit_box_sizes():
    with pytest.raises(MultiboxError) as error:
        build_detector(load_config(None, ["model.name=custom"]), 3)
    assert "anchors.box_sizes" in str(error.value) and "\n" not in str(error.value)
    # Square boxes when only sizes are given.
    _, spec = build_detector(
        load_config(
            None,
            [
                "model.name=custom",
                "anchors.box_sizes=[[16],[32],[64],[128]]",
                "data.input_size=[128,128]",
                "model.width_mult=0.5",
            ],
        ),
        1,
    )
    assert spec.layout.boxes_per_location() == [1, 1, 1, 1]
