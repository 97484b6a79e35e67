"""The tile grid covers every pixel; the merges remove tile-overlap duplicates and join cut halves."""

import pytest
import torch

from multibox.boxes.tiling import check_overlap, merge_detections, tile_grid
from multibox.data.tiles import starts
from multibox.errors import MultiboxError


@pytest.mark.parametrize(
    "length,tile,overlap", [(1920, 640, 0.2), (1080, 640, 0.2), (100, 64, 0.0), (64, 64, 0.5), (50, 64, 0.2)]
)
def test_grid_covers_every_pixel_with_at_least_the_overlap(length, tile, overlap):
    origins = starts(length, tile, overlap)
    size = min(tile, length)
    covered = torch.zeros(length, dtype=torch.bool)
    for origin in origins:
        covered[origin : origin + size] = True
    assert covered.all() and origins[-1] + size == length and origins[0] == 0
    assert all(b - a <= size * (1 - overlap) + 1 for a, b in zip(origins[:-1], origins[1:], strict=True))


def test_grid_clamps_a_tile_larger_than_the_frame():
    assert tile_grid(40, 50, (64, 64), 0.2).tolist() == [[0, 0, 50, 40]]
    assert len(tile_grid(1080, 1920, (640, 640), 0.2)) == 2 * 4


@pytest.mark.parametrize("overlap", [1.0, -0.1, 1.5])
def test_overlap_out_of_range_is_refused(overlap):
    with pytest.raises(MultiboxError, match="overlap: must be in"):
        check_overlap(overlap)


def _two_halves():
    """An object 40..80 x 10..30 cut by tile 0's right edge (64) and tile 1's left edge (51), and a far box."""
    boxes = torch.tensor([[40.0, 10, 64, 30], [51, 11, 80, 29], [0, 0, 10, 10]])
    windows = torch.tensor([[0, 0, 64, 64], [51, 0, 115, 64], [0, 0, 64, 64]])
    return boxes, torch.tensor([0.9, 0.8, 0.7]), torch.tensor([1, 1, 1]), windows, torch.tensor([0, 1, 0])


def test_merge_joins_the_halves_of_a_cut_object():
    boxes, scores, labels, windows, tiles = _two_halves()
    merged = merge_detections(boxes, scores, labels, windows, tiles, (64, 115), 0.45, 10, "merge")
    assert merged["boxes"].tolist() == [[40, 10, 80, 30], [0, 0, 10, 10]]
    assert merged["scores"].tolist() == pytest.approx([0.9, 0.7])
    plain = merge_detections(boxes, scores, labels, windows, tiles, (64, 115), 0.45, 10, "nms")
    assert len(plain["boxes"]) == 3  # NMS keeps both halves (IoU 0.38)


def test_merge_keeps_halves_of_different_classes_and_the_frame_edge_is_not_a_cut():
    boxes, scores, _, windows, tiles = _two_halves()
    merged = merge_detections(boxes, scores, torch.tensor([1, 2, 1]), windows, tiles, (64, 115), 0.45, 10, "merge")
    assert len(merged["boxes"]) == 3
    # the same boxes, but tile 0's right edge is the frame's edge: nothing was cut there
    merged = merge_detections(boxes, scores, torch.tensor([1, 1, 1]), windows, tiles, (64, 64), 0.45, 10, "merge")
    assert len(merged["boxes"]) == 3


def test_nms_removes_duplicates_from_overlapping_tiles_and_caps():
    boxes = torch.tensor([[50.0, 10, 60, 20], [50.5, 10, 60, 20], [5, 5, 9, 9]])
    merged = merge_detections(
        boxes,
        torch.tensor([0.6, 0.9, 0.5]),
        torch.tensor([1, 1, 2]),
        torch.tensor([[0, 0, 64, 64], [40, 0, 104, 64], [0, 0, 64, 64]]),
        torch.tensor([0, 1, 0]),
        (64, 104),
        0.45,
        1,
    )
    assert merged["boxes"].tolist() == [[50.5, 10, 60, 20]]
