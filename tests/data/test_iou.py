"""The numpy IoU against torchvision's box_iou."""

import numpy as np
import torch
from torchvision.ops import box_iou

from multibox.data.iou import iou_matrix


def test_iou_matrix_equals_torchvision_box_iou() -> None:
    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 100, (2, 40, 2))
    boxes = np.concatenate([corners.min(0), corners.max(0)], axis=1)
    a, b = boxes[:15], boxes[15:]
    b[0] = a[0]  # identical boxes: IoU 1
    b[1] = [200, 200, 210, 210]  # far away from all: IoU 0
    ours = iou_matrix(a, b)
    assert ours.shape == (15, 25)
    assert np.allclose(ours, box_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy())
    assert ours[0, 0] == 1.0 and not ours[:, 1].any()


def test_degenerate_boxes_give_zero_not_nan() -> None:
    point = np.array([[5.0, 5.0, 5.0, 5.0]])
    assert iou_matrix(point, point).tolist() == [[0.0]]
    assert iou_matrix(point, np.zeros((0, 4))).shape == (1, 0)
