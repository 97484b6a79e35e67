"""The SSD module itself: input normalisation, state-dict hygiene, output contract."""

import pytest
import torch
from torch import Tensor, nn

from multibox.models import SSD
from multibox.models.heads import SSDHead


class _Identity(nn.Module):
    """A backbone whose only level is its input, so the head sees exactly what SSD fed the backbone."""

    def forward(self, x: Tensor) -> list[Tensor]:
        return [x]


def _tiny_ssd() -> SSD:
    return SSD(_Identity(), SSDHead([3], [4], num_classes=3), image_mean=[0.1, 0.2, 0.3], image_std=[0.5, 0.25, 2.0])


def test_normalises_inside_the_model() -> None:
    model = _tiny_ssd().eval()
    images = torch.rand(2, 3, 5, 7)
    mean = torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)
    std = torch.tensor([0.5, 0.25, 2.0]).view(1, 3, 1, 1)
    box_regression, cls_logits = model(images)
    ref_regression, ref_logits = model.head([(images - mean) / std])
    torch.testing.assert_close(box_regression, ref_regression)
    torch.testing.assert_close(cls_logits, ref_logits)


def test_output_shapes() -> None:
    box_regression, cls_logits = _tiny_ssd()(torch.rand(2, 3, 5, 7))
    assert box_regression.shape == (2, 5 * 7 * 4, 4)
    assert cls_logits.shape == (2, 5 * 7 * 4, 3)


def test_mean_and_std_stay_out_of_the_state_dict() -> None:
    model = _tiny_ssd()
    assert all(key.startswith(("backbone.", "head.")) for key in model.state_dict())
    assert not any("image_" in key for key in model.state_dict())
    # ...but they are buffers, so they follow dtype/device moves.
    assert model.double().image_mean.dtype == torch.float64


def test_rejects_non_rgb_statistics() -> None:
    with pytest.raises(ValueError):
        SSD(_Identity(), SSDHead([3], [4], 3), image_mean=[0.5], image_std=[0.5, 0.5, 0.5])
