"""Batched matching against torchvision's per-image SSDMatcher."""

import torch
from torchvision.models.detection._utils import SSDMatcher
from torchvision.ops import box_convert, box_iou

from multibox.boxes.matching import gather_targets, match


def _boxes(n: int, generator: torch.Generator) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=generator) * 0.6
    wh = torch.rand(n, 2, generator=generator) * 0.35 + 0.05
    return torch.cat((xy, xy + wh), dim=1)


def test_batched_matching_equals_torchvision_per_image():
    generator = torch.Generator().manual_seed(1)
    defaults = box_convert(_boxes(300, generator), "xyxy", "cxcywh")
    counts = [3, 0, 5, 1]
    gmax = max(counts)
    gt = torch.zeros(len(counts), gmax, 4)
    labels = torch.zeros(len(counts), gmax, dtype=torch.long)
    for i, count in enumerate(counts):
        gt[i, :count] = _boxes(count, generator)
        labels[i, :count] = torch.randint(1, 4, (count,), generator=generator)
    matched = match(gt, labels, defaults, 0.5)
    reference_matcher = SSDMatcher(0.5)
    defaults_xyxy = box_convert(defaults, "cxcywh", "xyxy")
    for i, count in enumerate(counts):
        if count == 0:
            assert (matched[i] == -1).all()
            continue
        expected = reference_matcher(box_iou(gt[i, :count], defaults_xyxy))
        expected = torch.where(expected < 0, torch.full_like(expected, -1), expected)
        torch.testing.assert_close(matched[i], expected)


def test_every_ground_truth_gets_a_default_box_even_at_low_iou():
    defaults = box_convert(torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]]), "xyxy", "cxcywh")
    gt = torch.tensor([[[0.45, 0.45, 0.55, 0.55]]])  # IoU far below 0.5 with both
    matched = match(gt, torch.tensor([[2]]), defaults, 0.5)
    assert (matched >= 0).sum() == 1
    boxes, labels = gather_targets(gt, torch.tensor([[2]]), matched)
    assert labels.tolist()[0].count(2) == 1 and labels.tolist()[0].count(0) == 1
    torch.testing.assert_close(boxes[0, matched[0].argmax()], gt[0, 0])
