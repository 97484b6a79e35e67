"""Tiled training crops: clipped boxes, ignore regions, samplers on the seeded augmentation stream."""

import numpy as np
import pytest
import torch

from multibox.boxes.matching import ignored_defaults
from multibox.config import TilesConfig
from multibox.data.tiles import TileCrop, crop_targets
from multibox.data.transforms import build_train_transform
from multibox.losses import FocalLoss, MultiBoxLoss


def test_cut_boxes_are_clipped_and_mostly_hidden_ones_become_ignore_regions():
    boxes = np.array([[10, 10, 20, 20], [60, 10, 80, 20], [90, 90, 99, 99], [0, 50, 70, 60]], np.float32)
    out, labels = crop_targets(boxes, np.array([1, 2, 3, 4]), (0, 0, 64, 64), keep_min_visible=0.5)
    assert out.tolist() == [[10, 10, 20, 20], [60, 10, 64, 20], [0, 50, 64, 60]]
    assert labels.tolist() == [1, -2, 4]  # box 2 keeps 20% (ignored), box 3 is outside, box 4 keeps 91%


def _crop(sampler: str, seed: int) -> TileCrop:
    tiles = TilesConfig(size=(32, 32), sampler=sampler, object_prob=1.0)
    crop = TileCrop(tiles, build_train_transform("none", (32, 32)))
    crop.reseed(seed)
    return crop


def test_objects_sampler_crops_around_an_object_and_follows_the_seed():
    image = np.zeros((200, 300, 3), np.uint8)
    boxes, labels = np.array([[250, 150, 260, 160]], np.float32), np.array([1])
    for _ in range(5):
        out, out_boxes, out_labels = _crop("objects", 1)(image, boxes, labels)
        assert out.shape == (32, 32, 3) and out_labels.tolist() == [1]
    windows = lambda seed: [_crop("uniform", seed).window((200, 300), boxes) for _ in range(1)]  # noqa: E731
    first = _crop("uniform", 7)
    second = _crop("uniform", 7)
    assert [first.window((200, 300), boxes) for _ in range(6)] == [second.window((200, 300), boxes) for _ in range(6)]
    assert windows(7) == windows(7)


def test_a_tile_larger_than_the_frame_uses_the_frame_with_one_warning():
    crop = _crop("uniform", 0)
    with pytest.warns(UserWarning, match="larger than a 20x24 frame"):
        assert crop.window((20, 24), np.zeros((0, 4))) == (0, 0, 24, 20)


@pytest.mark.parametrize("loss", [MultiBoxLoss(3), FocalLoss(3)])
def test_ignore_regions_are_neither_positives_nor_negatives(loss):
    defaults = torch.tensor([[0.25, 0.25, 0.5, 0.5], [0.75, 0.75, 0.5, 0.5], [0.9, 0.1, 0.1, 0.1]])
    gt = torch.tensor([[[0.0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1]]])
    assert ignored_defaults(gt, torch.tensor([[1, -2]]), defaults).tolist() == [[False, True, False]]
    logits = torch.zeros(1, 3, 3)
    logits[0, 1, 2] = 5.0  # the model sees class 2 on the cut object: no loss for that
    ignored = loss(torch.zeros(1, 3, 4), logits, defaults, gt, torch.tensor([[1, -2]]))
    as_background = loss(torch.zeros(1, 3, 4), logits, defaults, gt, torch.tensor([[1, 0]]))
    assert ignored["num_positives"] == 1 and ignored["loss_cls"] < as_background["loss_cls"]
    logits[0, 1, 2] = -5.0
    assert torch.isclose(
        loss(torch.zeros(1, 3, 4), logits, defaults, gt, torch.tensor([[1, -2]]))["loss_cls"], ignored["loss_cls"]
    )
