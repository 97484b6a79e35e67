"""Every model by name: default-box counts at two input sizes (one non-square), and a training step.

The counts were worked out from each layout (e.g. SSD300 at 300x500: conv4_3 at ceil(500/8) = 63
columns) and pin down the dry-run feature sizes, the anchors per location and their product.
"""

import typing
from pathlib import Path

import pytest
import torch

from multibox.config import ModelConfig, load_config
from multibox.models.detector import build_detector
from multibox.models.factory import MODEL_NAMES, MODELS

DEMO = Path(__file__).resolve().parents[2] / "multibox" / "configs" / "demo.yaml"

BOX_COUNTS = [
    ("ssd300_vgg16", (300, 300), 8732),
    ("ssd300_vgg16", (300, 500), 14398),
    ("ssd512_vgg16", (512, 512), 24564),
    ("ssd512_vgg16", (512, 640), 30712),
    ("ssdlite320_mobilenet_v3_large", (320, 320), 3234),
    ("ssdlite320_mobilenet_v3_large", (240, 320), 2454),
    ("ssdlite_mobilenet_v2", (300, 300), 3000),
    ("ssdlite_mobilenet_v2", (128, 192), 780),
    ("ssd_mobilenet_v1", (300, 300), 3000),
    ("ssd_mobilenet_v1", (224, 320), 2274),
    ("ssd_resnet50", (300, 300), 8732),
    ("ssd_resnet50", (2160, 3840), 788144),
    ("ssd_resnet50_fpn", (640, 640), 51150),
    ("ssd_resnet50_fpn", (384, 640), 30690),
]


@pytest.mark.parametrize("name, size, expected", BOX_COUNTS)
def test_default_box_count(name, size, expected):
    config = load_config(None, [f"model.name={name}", f"data.input_size=[{size[0]},{size[1]}]"])
    detector, spec = build_detector(config, 20)
    assert spec.num_boxes == expected
    assert detector.default_boxes.shape == (expected, 4)


@pytest.mark.parametrize("size, expected", [((128, 128), 2016), ((96, 160), 1890)])
def test_custom_model_box_count(size, expected):
    config = load_config(DEMO, [f"data.input_size=[{size[0]},{size[1]}]"])
    assert build_detector(config, 5)[1].num_boxes == expected


# The models' own options for a quick step; every entry of the model table is trained here (one step).
STEP = {
    "ssd300_vgg16": ([], (268, 300)),
    "ssd512_vgg16": ([], (320, 320)),
    "ssd_resnet50": ([], (300, 300)),
    "custom": (
        ["model.backbone=mobilenet_v2", "model.strides=[8,16,32,64]", "anchors.box_sizes=[[12],[24],[48],[96]]"],
        (128, 96),
    ),
}


def test_every_model_of_the_table_is_checked_here_and_in_the_config() -> None:
    assert {name for name, _, _ in BOX_COUNTS} | {"custom"} == set(MODEL_NAMES)
    assert typing.get_args(ModelConfig.model_fields["name"].annotation) == MODEL_NAMES


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_and_backward(name, one_thread):
    extra, size = STEP.get(name, ([], (128, 128)))
    width = ["model.width_mult=0.5"] if MODELS[name].width_mult else []
    config = load_config(None, [f"model.name={name}", *extra, *width, f"data.input_size=[{size[0]},{size[1]}]"])
    detector, spec = build_detector(config, 3)
    batch = 1 if "vgg16" in name else 2  # VGG has no BatchNorm; one image keeps it quick
    regression, logits = detector(torch.rand(batch, 3, *size))
    assert regression.shape == (batch, spec.num_boxes, 4) and logits.shape == (batch, spec.num_boxes, 4)
    (regression.square().mean() + logits.logsumexp(-1).mean()).backward()
    grads = [p.grad for p in detector.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
