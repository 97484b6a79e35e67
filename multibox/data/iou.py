"""IoU of xyxy boxes in numpy, for the CPU-side code that works on numpy arrays (crops, synthetic data, VOC AP).

The torch code uses ``torchvision.ops.box_iou``; this is its numpy counterpart, so augmentation and metrics need
not convert every box array to a tensor and back.
"""

from __future__ import annotations

import numpy as np


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoU of xyxy boxes ``a`` (N, 4) and ``b`` (M, 4); 0 where a union is empty."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    union = area_a[:, None] + area_b[None] - inter
    return inter / np.maximum(union, np.finfo(np.float64).eps)
