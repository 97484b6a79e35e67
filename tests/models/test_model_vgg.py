"""SSD300/SSD512 VGG16: exact parity with torchvision's ssd300_vgg16, and the paper's box counts."""

import time

import pytest
import torch
import torchvision
from torchvision.models.detection import ssd300_vgg16 as torchvision_ssd300_vgg16
from torchvision.models.detection.ssd import _vgg_extractor

from multibox.models import feature_map_sizes
from multibox.models.vgg import IMAGE_MEAN, IMAGE_STD, ssd300_vgg16, ssd512_vgg16

COCO_CLASSES = 91


@pytest.fixture(scope="module")
def pair() -> tuple[torch.nn.Module, torch.nn.Module]:
    """(torchvision, ours), each built right after seeding with 0 (built once: VGG is large)."""
    torch.manual_seed(0)
    theirs = torchvision_ssd300_vgg16(weights=None, weights_backbone=None, num_classes=COCO_CLASSES).eval()
    torch.manual_seed(0)
    ours = ssd300_vgg16(COCO_CLASSES).eval()
    return theirs, ours


def test_state_dict_keys_and_shapes_equal_torchvision(pair) -> None:
    theirs, ours = pair
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    ours.load_state_dict(theirs.state_dict(), strict=True)


def test_same_seed_gives_torchvision_initialisation(pair) -> None:
    theirs, ours = pair
    for (key, ours_value), theirs_value in zip(ours.state_dict().items(), theirs.state_dict().values(), strict=True):
        assert torch.equal(ours_value, theirs_value), key


def test_outputs_equal_torchvision_heads(pair) -> None:
    theirs, ours = pair
    ours.load_state_dict(theirs.state_dict())
    images = torch.rand(1, 3, 300, 300)
    assert theirs.transform.image_mean == IMAGE_MEAN and theirs.transform.image_std == IMAGE_STD
    mean, std = torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGE_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        reference = theirs.head(list(theirs.backbone((images - mean) / std).values()))
        box_regression, cls_logits = ours(images)
    assert box_regression.shape == (1, 8732, 4) and cls_logits.shape == (1, 8732, COCO_CLASSES)
    torch.testing.assert_close(box_regression, reference["bbox_regression"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(cls_logits, reference["cls_logits"], atol=1e-4, rtol=1e-4)


def test_parameter_count_matches_torchvision(pair) -> None:
    _, ours = pair
    assert sum(p.numel() for p in ours.parameters()) == 35_641_826
    assert torchvision.models.detection.SSD300_VGG16_Weights.COCO_V1.meta["num_params"] == 35_641_826


def test_ssd300_layout(pair) -> None:
    _, ours = pair
    assert feature_map_sizes(ours, (300, 300)) == [(38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)]
    assert ours.backbone.out_channels == [512, 1024, 512, 256, 256, 256]
    assert ours.backbone.features[16].ceil_mode  # pool3: 75 -> 38


def test_ssd512_has_the_papers_24564_boxes() -> None:
    with torch.device("meta"):  # shapes only: skips initialising ~160M parameters
        model = ssd512_vgg16(21)
        reference = _vgg_extractor(torchvision.models.vgg16(weights=None), highres=True, trainable_layers=5)
    sizes = feature_map_sizes(model, (512, 512))
    assert sizes == [(64, 64), (32, 32), (16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]
    assert sum(h * w * a for (h, w), a in zip(sizes, model.head.num_anchors, strict=True)) == 24564
    # Same parameters as torchvision's (unreleased) highres extractor, so its weights would load.
    assert {k: v.shape for k, v in model.backbone.state_dict().items()} == {
        k: v.shape for k, v in reference.state_dict().items()
    }


def test_feature_map_sizes_of_an_8_megapixel_input_is_instant_and_harmless(pair) -> None:
    _, ours = pair
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    start = time.perf_counter()
    sizes = feature_map_sizes(ours, (2448, 3264))
    assert time.perf_counter() - start < 2.0
    assert sizes == [(306, 408), (153, 204), (77, 102), (39, 51), (37, 49), (35, 47)]
    after = ours.state_dict()
    assert all(torch.equal(before[k], after[k]) and after[k].device.type == "cpu" for k in before)
