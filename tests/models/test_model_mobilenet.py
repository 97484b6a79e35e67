"""SSDLite320 MobileNetV3-Large: parity with torchvision (including width_mult), and trainability."""

import pytest
import torch
from torchvision.models.detection import ssdlite320_mobilenet_v3_large as torchvision_ssdlite

from multibox.models import feature_map_sizes
from multibox.models.mobilenet_v3 import IMAGE_MEAN, IMAGE_STD, ssdlite320_mobilenet_v3_large


def _pair(width_mult: float, num_classes: int = 5):
    torch.manual_seed(0)
    theirs = torchvision_ssdlite(weights=None, weights_backbone=None, num_classes=num_classes, width_mult=width_mult)
    torch.manual_seed(0)
    ours = ssdlite320_mobilenet_v3_large(num_classes, width_mult=width_mult)
    return theirs.eval(), ours.eval()


@pytest.mark.parametrize("width_mult", [1.0, 0.5])
def test_state_dict_and_initialisation_equal_torchvision(width_mult: float) -> None:
    theirs, ours = _pair(width_mult)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    for (key, ours_value), theirs_value in zip(ours.state_dict().items(), theirs.state_dict().values(), strict=True):
        assert torch.equal(ours_value, theirs_value), key
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())


@pytest.mark.parametrize("width_mult", [1.0, 0.5])
def test_outputs_equal_torchvision_heads(width_mult: float) -> None:
    theirs, ours = _pair(width_mult)
    # Random BatchNorm statistics, so eval-mode normalisation is exercised too.
    with torch.no_grad():
        for module in theirs.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 2.0)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    images = torch.rand(2, 3, 320, 320)
    assert theirs.transform.image_mean == IMAGE_MEAN and theirs.transform.image_std == IMAGE_STD
    normalised = (images - 0.5) / 0.5
    with torch.no_grad():
        reference = theirs.head(list(theirs.backbone(normalised).values()))
        box_regression, cls_logits = ours(images)
    assert box_regression.shape == (2, 3234, 4) and cls_logits.shape == (2, 3234, 5)
    torch.testing.assert_close(box_regression, reference["bbox_regression"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(cls_logits, reference["cls_logits"], atol=1e-4, rtol=1e-4)


def test_layout() -> None:
    model = ssdlite320_mobilenet_v3_large(91)
    assert sum(p.numel() for p in model.parameters()) == 3_440_060  # torchvision's COCO model
    assert feature_map_sizes(model, (320, 320)) == [(20, 20), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]
    assert model.backbone.out_channels == [672, 480, 512, 256, 256, 128]  # reduced tail: 960 // 2 = 480
    bn = model.backbone.extra[0][0][1]
    assert (bn.eps, bn.momentum) == (0.001, 0.03)


def test_small_model_trains() -> None:
    """The demo's model: width 0.5 at 128x128 — forward, loss, backward, every parameter gets a gradient."""
    model = ssdlite320_mobilenet_v3_large(4, width_mult=0.5).train()
    sizes = feature_map_sizes(model, (128, 128))
    assert sizes == [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1), (1, 1)]
    num_boxes = sum(h * w * 6 for h, w in sizes)
    box_regression, cls_logits = model(torch.rand(2, 3, 128, 128))
    assert box_regression.shape == (2, num_boxes, 4) and cls_logits.shape == (2, num_boxes, 4)
    loss = box_regression.square().mean() + torch.nn.functional.cross_entropy(
        cls_logits.flatten(0, 1), torch.randint(0, 4, (2 * num_boxes,))
    )
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name


def test_training_on_a_batch_of_one_fails_on_1x1_maps_as_in_torchvision() -> None:
    """BatchNorm cannot train on a single value per channel: the last levels are 1x1 at 128 (and at 320).

    Training loops must therefore drop a last batch of size 1; evaluation is unaffected.
    """
    model = ssdlite320_mobilenet_v3_large(3, width_mult=0.5)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        model.train()(torch.rand(1, 3, 128, 128))
    box_regression, _ = model.eval()(torch.rand(1, 3, 128, 128))
    assert box_regression.shape == (1, 522, 4)
