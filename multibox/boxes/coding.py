"""Box encoding against default boxes, with the SSD variances (0.1, 0.2).

An encoded box is (dx, dy, dw, dh) = ((g_cx - d_cx) / (v0 d_w), (g_cy - d_cy) / (v0 d_h),
log(g_w / d_w) / v1, log(g_h / d_h) / v1) — torchvision's BoxCoder with weights (10, 10, 5, 5).
The encoding is scale-free, so normalised and pixel coordinates give the same numbers.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchvision.ops import box_convert

# exp() of a larger dw/dh would overflow; the same clamp as torchvision's decoder.
_MAX_LOG_SCALE = math.log(1000.0 / 16)


class BoxCoder:
    """Encodes xyxy boxes against cxcywh default boxes and decodes them back."""

    def __init__(self, variances: tuple[float, float] = (0.1, 0.2)) -> None:
        self.center_variance, self.size_variance = variances

    def encode(self, boxes_xyxy: Tensor, default_cxcywh: Tensor) -> Tensor:
        """boxes (..., A, 4) xyxy, default boxes (A, 4) cxcywh → (..., A, 4) offsets."""
        boxes = box_convert(boxes_xyxy, "xyxy", "cxcywh")
        centre = (boxes[..., :2] - default_cxcywh[:, :2]) / (self.center_variance * default_cxcywh[:, 2:])
        # Padding/background rows have zero size; clamp keeps log finite (they are masked out later).
        size = torch.log(boxes[..., 2:].clamp(min=1e-8) / default_cxcywh[:, 2:]) / self.size_variance
        return torch.cat((centre, size), dim=-1)

    def decode(self, offsets: Tensor, default_cxcywh: Tensor) -> Tensor:
        """offsets (..., A, 4) → (..., A, 4) xyxy boxes in the default boxes' coordinates."""
        centre = offsets[..., :2] * self.center_variance * default_cxcywh[:, 2:] + default_cxcywh[:, :2]
        log_size = (offsets[..., 2:] * self.size_variance).clamp(max=_MAX_LOG_SCALE)
        half = 0.5 * torch.exp(log_size) * default_cxcywh[:, 2:]
        return torch.cat((centre - half, centre + half), dim=-1)
