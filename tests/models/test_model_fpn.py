"""SSD-ResNet50-FPN: MindSpore's 5-level layout, RetinaNet anchors, a head shared across levels."""

import math

import pytest
import torch

from multibox.config import load_config
from multibox.errors import MultiboxError
from multibox.models import anchor_defaults, build_model, feature_map_sizes
from multibox.models.detector import build_detector
from multibox.models.fpn import WeightSharedHead

NAME = "ssd_resnet50_fpn"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def detector_640():
    torch.manual_seed(0)
    return build_detector(load_config(None, [f"model.name={NAME}", "data.input_size=[640,640]"]), 80)


def test_feature_sizes_and_box_count_at_640(detector_640):
    detector, spec = detector_640
    assert spec.feature_sizes == [(80, 80), (40, 40), (20, 20), (10, 10), (5, 5)]
    assert spec.layout.boxes_per_location() == [6] * 5
    assert spec.num_boxes == 51_150 == detector.default_boxes.shape[0]
    assert detector.model.backbone.out_channels == [256] * 5
    assert detector.settings.score_activation == "softmax"  # loss.name defaults to multibox


def test_anchors_are_retinanets(detector_640):
    detector, _ = detector_640
    wh = detector.default_boxes[:, 2:] * 640
    # First cell of P3: sizes 32 and 32*sqrt(2), each as 1:1, 2:1, 1:2 (w = s*sqrt(2), h = s/sqrt(2)).
    r = math.sqrt(2.0)
    expected = [(32, 32), (32 * r, 32 / r), (32 / r, 32 * r)]
    expected += [(s * a, s / a) for s in [32 * r] for a in (1.0, r, 1 / r)]
    torch.testing.assert_close(wh[:6], torch.tensor(expected, dtype=torch.float32))
    torch.testing.assert_close(detector.default_boxes[0, :2], torch.tensor([4 / 640, 4 / 640]))  # centre at stride/2
    # P7's first box: 512 px square, centre (64, 64) px.
    p7 = 51_150 - 25 * 6
    torch.testing.assert_close(detector.default_boxes[p7] * 640, torch.tensor([64.0, 64.0, 512.0, 512.0]))
    defaults = anchor_defaults(NAME)
    assert defaults.box_sizes[0] == pytest.approx([32, 45.254834]) and defaults.aspect_ratios == [[2.0]] * 5


def test_head_convs_are_one_set_for_all_levels(detector_640):
    head = detector_640[0].model.head
    assert isinstance(head, WeightSharedHead)
    convs = [name for name, m in head.named_modules() if isinstance(m, torch.nn.Conv2d)]
    # 4 tower convs + 1 predictor per task, whatever the number of levels; only BatchNorm is per level.
    assert sorted(convs) == sorted(
        [f"{task}_tower.convs.{i}" for task in ("classification", "regression") for i in range(4)]
        + ["classification_tower.predictor", "regression_tower.predictor"]
    )
    conv_params = sum(p.numel() for name, p in head.named_parameters() if ".norms." not in name)
    assert conv_params == 2 * 4 * (256 * 256 * 9 + 256) + (256 * 9 + 1) * (6 * 81 + 6 * 4)
    fewer_levels = WeightSharedHead(256, 2, 6, 81)
    assert sum(p.numel() for n, p in fewer_levels.named_parameters() if ".norms." not in n) == conv_params
    # Same map on two levels (norms at their identical initial state) -> identical predictions.
    head.eval()
    x = torch.randn(1, 256, 3, 4)
    with torch.no_grad():
        regression, logits = head([x, x, x[..., :2, :2], x[..., :1, :1], x[..., :1, :1]])
    torch.testing.assert_close(regression[:, :72], regression[:, 72:144])
    torch.testing.assert_close(logits[:, :72], logits[:, 72:144])


def test_class_prior_starts_at_one_percent(detector_640):
    head = detector_640[0].model.head
    bias = head.classification_tower.predictor.bias
    torch.testing.assert_close(torch.sigmoid(bias), torch.full_like(bias, 0.01))
    assert torch.all(head.regression_tower.predictor.bias == 0)


def test_non_square_input_lines_up_with_default_boxes():
    torch.manual_seed(0)
    config = load_config(None, [f"model.name={NAME}", "data.input_size=[96,160]"])
    detector, spec = build_detector(config, 3)
    assert spec.feature_sizes == [(12, 20), (6, 10), (3, 5), (2, 3), (1, 2)]
    detector.eval()
    with torch.no_grad():
        regression, logits = detector(torch.rand(1, 3, 96, 160))
    assert regression.shape == (1, spec.num_boxes, 4) == (1, 6 * (240 + 60 + 15 + 6 + 2), 4)
    assert logits.shape == (1, spec.num_boxes, 4)
    # Pixel sizes do not depend on the input size: still 32 px at P3 on a 96x160 input.
    torch.testing.assert_close(detector.default_boxes[0, 2:] * torch.tensor([160.0, 96.0]), torch.tensor([32.0, 32.0]))
    assert feature_map_sizes(detector.model, (720, 1280)) == [(90, 160), (45, 80), (23, 40), (12, 20), (6, 10)]


def test_forward_backward_at_128():
    torch.manual_seed(0)
    model = build_model(NAME, 3, [[2.0]] * 5, num_anchors=[6] * 5).train()
    regression, logits = model(torch.rand(2, 3, 128, 128))
    assert regression.shape == (2, 6 * (256 + 64 + 16 + 4 + 1), 4) and logits.shape[-1] == 3
    (regression.square().mean() + logits.mean()).backward()
    assert model.backbone.body.conv1.weight.grad is not None
    assert model.head.classification_tower.convs[0].weight.grad.abs().sum() > 0


def test_unequal_boxes_per_level_is_a_one_line_error():
    with pytest.raises(MultiboxError) as error:
        build_model(NAME, 3, [[2.0], [2.0], [2.0], [2.0], [2.0, 3.0]])
    assert "same number of boxes" in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(MultiboxError, match="width_mult"):
        build_model(NAME, 3, [[2.0]] * 5, width_mult=0.5)
