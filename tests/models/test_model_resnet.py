"""SSD-ResNet50 (NVIDIA / MLCommons layout): the seed's 8 MP summary table, SSD300 layout, trainability."""

from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models import resnet50

from multibox.config import load_config
from multibox.errors import MultiboxError
from multibox.models import anchor_defaults, build_model, feature_map_sizes
from multibox.models.detector import build_detector
from multibox.models.heads import SSDHead
from multibox.models.resnet import IMAGE_MEAN, IMAGE_STD, resnet50_features, ssd_resnet50

NAME = "ssd_resnet50"
CONFIG_8MP = Path(__file__).resolve().parents[2] / "multibox" / "configs" / "ssd_resnet50_cognata_8mp.yaml"
SIZES_8MP = [(270, 480), (135, 240), (68, 120), (34, 60), (32, 58), (30, 56)]
SIZES_300 = [(38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)]

# The seed's torchinfo table (MLCommons model_summary.py, test_8MP, 10 scores per box), row by row.
SEED_FEATURES = [9_408, 128, 0, 0, 215_808, 1_219_584, 7_098_368]  # conv1, bn1, relu, maxpool, layer1-3
SEED_EXTRAS = [
    [262_144, 512, 0, 1_179_648, 1_024, 0],
    [131_072, 512, 0, 1_179_648, 1_024, 0],
    [65_536, 256, 0, 294_912, 512, 0],
    [32_768, 256, 0, 294_912, 512, 0],
    [32_768, 256, 0, 294_912, 512, 0],
]
SEED_LOC = [147_472, 110_616, 110_616, 55_320, 36_880, 36_880]
SEED_CONF = [368_680, 276_540, 276_540, 138_300, 92_200, 92_200]
SEED_TOTAL = 14_059_236


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def detector_8mp():
    """The 8 MP config's detector with 9 foreground classes (built once: 14M parameters, 788k boxes)."""
    config = load_config(CONFIG_8MP)
    return build_detector(config, 9)


def test_8mp_config_reproduces_the_seed_table(detector_8mp) -> None:
    detector, spec = detector_8mp
    assert spec.feature_sizes == SIZES_8MP
    assert spec.boxes_per_level == [518_400, 194_400, 48_960, 12_240, 7_424, 6_720]
    assert spec.num_boxes == 788_144
    assert detector.default_boxes.shape == (788_144, 4)
    assert detector.model.head.num_classes == 10  # 9 + background: the seed's 40 = 4 x 10 conf channels
    assert _count(detector) == SEED_TOTAL


def test_parameters_per_layer_equal_the_seed_table(detector_8mp) -> None:
    model = detector_8mp[0].model
    assert [_count(layer) for layer in model.backbone.features] == SEED_FEATURES
    assert [[_count(layer) for layer in block] for block in model.backbone.extra] == SEED_EXTRAS
    assert [_count(conv) for conv in model.head.regression_head.module_list] == SEED_LOC
    assert [_count(conv) for conv in model.head.classification_head.module_list] == SEED_CONF
    assert model.backbone.out_channels == [1024, 512, 512, 256, 256, 256]
    assert isinstance(model.head, SSDHead) and model.head.num_anchors == [4, 6, 6, 6, 4, 4]


def test_8mp_config_loads_the_seed_recipe() -> None:
    config = load_config(CONFIG_8MP)
    assert config.model.name == NAME and config.data.input_size == (2160, 3840)
    assert config.anchors.sizes == [21, 45, 99, 153, 207, 261, 315]
    assert config.anchors.steps == [8, 16, 32, 64, 100, 300]
    assert config.optimizer.nesterov and config.optimizer.momentum == 0.9
    assert config.optimizer.lr == pytest.approx(2.6e-3 * config.data.batch_size / 32)
    assert config.scheduler.milestones == [43, 54] and config.train.epochs == 65
    e = config.eval
    assert (e.score_threshold, e.nms_threshold, e.topk_candidates, e.max_detections) == (0.05, 0.5, 200, 500)


def test_layer3_keeps_stride_8_and_imagenet_shapes() -> None:
    reference = resnet50(weights=None)
    features = resnet50_features(resnet50(weights=None))
    block = features[6][0]
    assert block.conv2.stride == (1, 1) and block.downsample[0].stride == (1, 1) and block.conv1.stride == (1, 1)
    # Same parameter shapes as torchvision's conv1 ... layer3, so ImageNet weights load after renaming.
    names = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3"]
    ours = {k: v.shape for k, v in features.state_dict().items()}
    theirs = {
        f"{names.index(k.split('.')[0])}.{k.split('.', 1)[1]}": v.shape
        for k, v in reference.state_dict().items()
        if k.split(".")[0] in names
    }
    assert ours == theirs


def test_default_anchors_are_nvidias_ssd300() -> None:
    defaults = anchor_defaults(NAME)
    assert defaults.aspect_ratios == [[2], [2, 3], [2, 3], [2, 3], [2], [2]]
    assert defaults.scales == pytest.approx([0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05])
    assert defaults.steps == [8, 16, 32, 64, 100, 300]


def test_detector_at_300_has_8732_boxes() -> None:
    config = load_config(None, [f"model.name={NAME}", "data.input_size=[300,300]"])
    detector, spec = build_detector(config, num_classes=80)
    assert spec.feature_sizes == SIZES_300
    assert spec.num_boxes == 8732
    assert spec.layout.steps == (8, 16, 32, 64, 100, 300)
    # First box: centre half an 8-px step in, a 21-px square; last level (1x1): centred, a 261-px square.
    torch.testing.assert_close(detector.default_boxes[0], torch.tensor([4 / 300, 4 / 300, 21 / 300, 21 / 300]))
    torch.testing.assert_close(detector.default_boxes[-4], torch.tensor([0.5, 0.5, 261 / 300, 261 / 300]))


def test_pixel_sizes_equal_the_fraction_form() -> None:
    common = [f"model.name={NAME}", "data.input_size=[300,300]"]
    pixels = load_config(
        None, [*common, "anchors.sizes=[21,45,99,153,207,261,315]", "anchors.steps=[8,16,32,64,100,300]"]
    )
    fractions = load_config(None, common)  # the model's defaults: scales = sizes / 300
    detector_px, spec_px = build_detector(pixels, 3)
    detector_fr, spec_fr = build_detector(fractions, 3)
    assert spec_px.layout.scales == pytest.approx(spec_fr.layout.scales)
    torch.testing.assert_close(detector_px.default_boxes, detector_fr.default_boxes)


def test_small_model_trains() -> None:
    """Batch 2 at 264x264 (both sides must be >= 257): forward, loss, backward, finite gradients everywhere."""
    model = build_model(NAME, 4, anchor_defaults(NAME).aspect_ratios).train()
    sizes = feature_map_sizes(model, (264, 264))
    assert sizes == [(33, 33), (17, 17), (9, 9), (5, 5), (3, 3), (1, 1)]
    boxes = sum(h * w * a for (h, w), a in zip(sizes, [4, 6, 6, 6, 4, 4], strict=True))
    box_regression, cls_logits = model(torch.rand(2, 3, 264, 264))
    assert box_regression.shape == (2, boxes, 4) and cls_logits.shape == (2, boxes, 4)
    loss = box_regression.square().mean() + nn.functional.cross_entropy(
        cls_logits.flatten(0, 1), torch.randint(0, 4, (2 * boxes,))
    )
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name


def test_initialisation_and_normalisation() -> None:
    model = ssd_resnet50(3)
    torch.testing.assert_close(model.image_mean.flatten(), torch.tensor(IMAGE_MEAN))
    torch.testing.assert_close(model.image_std.flatten(), torch.tensor(IMAGE_STD))
    assert IMAGE_MEAN == [0.485, 0.456, 0.406] and IMAGE_STD == [0.229, 0.224, 0.225]
    # Xavier-uniform extras and heads: weights within sqrt(6 / (fan_in + fan_out)), head biases zero.
    convs = [m for m in [*model.backbone.extra.modules(), *model.head.modules()] if isinstance(m, nn.Conv2d)]
    for conv in convs:
        fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
        fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
        bound = (6 / (fan_in + fan_out)) ** 0.5
        assert conv.weight.abs().max() <= bound and conv.weight.abs().max() > 0.9 * bound
        assert conv.bias is None or not conv.bias.any()


def test_inputs_too_small_and_bad_options_fail_in_one_line() -> None:
    model = ssd_resnet50(3)
    with pytest.raises(MultiboxError, match="256x256 is too small"):
        feature_map_sizes(model, (256, 256))
    with pytest.raises(MultiboxError, match="width_mult"):
        build_model(NAME, 3, anchor_defaults(NAME).aspect_ratios, width_mult=0.5)
    with pytest.raises(ValueError, match="6 feature levels but 7"):
        ssd_resnet50(3, num_anchors=[4] * 7)
