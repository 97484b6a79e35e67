"""Box encoding against torchvision's BoxCoder with weights (10, 10, 5, 5)."""

import torch
from torchvision.models.detection._utils import BoxCoder as TorchvisionBoxCoder
from torchvision.ops import box_convert

from multibox.boxes.coding import BoxCoder


def _random_boxes(n: int) -> torch.Tensor:
    xy = torch.rand(n, 2) * 0.7
    wh = torch.rand(n, 2) * 0.3 + 0.01
    return torch.cat((xy, xy + wh), dim=1)


def test_encode_equals_torchvision_and_decode_inverts():
    defaults = box_convert(_random_boxes(50), "xyxy", "cxcywh")
    gt = _random_boxes(50)
    ours = BoxCoder().encode(gt, defaults)
    reference = TorchvisionBoxCoder((10.0, 10.0, 5.0, 5.0)).encode_single(gt, box_convert(defaults, "cxcywh", "xyxy"))
    torch.testing.assert_close(ours, reference, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(BoxCoder().decode(ours, defaults), gt, atol=1e-5, rtol=0)


def test_decode_equals_torchvision_including_the_size_clamp():
    defaults = box_convert(_random_boxes(40), "xyxy", "cxcywh")
    offsets = torch.randn(40, 4) * 3
    offsets[0, 2:] = 100.0  # exp would overflow without the clamp
    ours = BoxCoder().decode(offsets, defaults)
    reference = TorchvisionBoxCoder((10.0, 10.0, 5.0, 5.0)).decode_single(
        offsets, box_convert(defaults, "cxcywh", "xyxy")
    )
    assert torch.isfinite(ours).all()
    torch.testing.assert_close(ours, reference, atol=1e-4, rtol=1e-4)


def test_batched_encode_broadcasts_over_images():
    defaults = box_convert(_random_boxes(10), "xyxy", "cxcywh")
    gt = torch.stack([_random_boxes(10), _random_boxes(10)])
    batched = BoxCoder().encode(gt, defaults)
    torch.testing.assert_close(batched[1], BoxCoder().encode(gt[1], defaults))
