"""Tiles of a large frame and the merge of per-tile detections, for sliced inference.

A frame is cut into an overlapping grid that covers every pixel (the last row and column of
tiles end exactly at the frame's edge); each tile's detections are shifted back into frame
pixels and merged. Two merges, both on torchvision ops with no per-box Python loop:

* ``nms``: class-wise NMS (``torchvision.ops.batched_nms``) over all tiles' boxes, as SAHI's
  NMS postprocess does (Akyon et al., "Slicing Aided Hyper Inference", ICIP 2022,
  https://github.com/obss/sahi).
* ``merge``: first joins the two halves of an object cut by a tile edge (boxes that touch an
  inner tile edge, of the same class, from different tiles, overlapping across the seam), then
  drops cut boxes lying mostly inside a whole box of their class, then the class-wise NMS.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor
from torchvision.ops import batched_nms

from multibox.data.tiles import starts
from multibox.errors import MultiboxError

Merge = Literal["nms", "merge"]
MERGES = ("nms", "merge")
EDGE_MARGIN = 2.0  # pixels: a box edge this close to an inner tile edge counts as cut by it
SEAM_OVERLAP = 0.5  # cut halves join when their extents along the seam overlap by this IoU (1-D)
INSIDE = 0.6  # a cut box with this fraction of its area inside a whole box of its class is a fragment of it


def check_overlap(overlap: float, key: str = "overlap") -> float:
    """Overlap is a fraction of the tile: 0 (tiles touch) up to, not including, 1 (tiles would not advance)."""
    if not 0.0 <= float(overlap) < 1.0:
        raise MultiboxError(f"{key}: must be in [0, 1), got {overlap:g}")
    return float(overlap)


def check_tile(tile: tuple[int, int], min_side: int, key: str = "tile") -> tuple[int, int]:
    """A tile must span at least the model's smallest stride: one cell of its finest feature map."""
    height, width = int(tile[0]), int(tile[1])
    if min(height, width) < min_side:
        raise MultiboxError(f"{key}: {height}x{width} is smaller than the model's smallest stride ({min_side} px)")
    return height, width


def tile_grid(height: int, width: int, tile: tuple[int, int], overlap: float) -> Tensor:
    """(T, 4) int64 xyxy windows of a `height` x `width` frame; a tile larger than the frame is clamped to it."""
    tile_h, tile_w = min(int(tile[0]), height), min(int(tile[1]), width)
    ys, xs = starts(height, tile_h, overlap), starts(width, tile_w, overlap)
    return torch.tensor([[x, y, x + tile_w, y + tile_h] for y in ys for x in xs], dtype=torch.int64)


def cut_edges(boxes: Tensor, windows: Tensor, frame: tuple[int, int], margin: float = EDGE_MARGIN) -> Tensor:
    """(K, 4) bool: box side (left, top, right, bottom) lies on an edge of its tile that is inside the frame.

    boxes (K, 4) xyxy in frame pixels, windows (K, 4) the tile each box came from (a full-frame
    box has the frame as its window, so it is never cut)."""
    height, width = frame
    windows = windows.to(boxes.dtype)
    inner = torch.stack((windows[:, 0] > 0, windows[:, 1] > 0, windows[:, 2] < width, windows[:, 3] < height), dim=1)
    return inner & ((boxes - windows).abs() <= margin)


def _axis_iou(lo1: Tensor, hi1: Tensor, lo2: Tensor, hi2: Tensor) -> Tensor:
    """Pairwise 1-D IoU of intervals [lo1, hi1] (K,) and [lo2, hi2] (K,): (K, K)."""
    inter = (torch.minimum(hi1[:, None], hi2[None]) - torch.maximum(lo1[:, None], lo2[None])).clamp(min=0)
    union = (hi1 - lo1)[:, None] + (hi2 - lo2)[None] - inter
    return inter / union.clamp(min=1e-6)


def _components(adjacency: Tensor) -> Tensor:
    """Connected-component id (the smallest member index) per node of a symmetric (K, K) bool adjacency."""
    count = adjacency.shape[0]
    label = torch.arange(count, device=adjacency.device)
    big = torch.full((count, count), count, device=adjacency.device, dtype=label.dtype)
    for _ in range(count):  # converges in (longest chain) steps, usually 1-2
        neighbour = torch.where(adjacency, label[None, :].expand(count, count), big).amin(dim=1)
        updated = torch.minimum(label, neighbour)
        if torch.equal(updated, label):
            break
        label = updated
    return label


def join_cut_halves(
    boxes: Tensor, scores: Tensor, labels: Tensor, cut: Tensor, tile_ids: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Union the boxes of one object cut by tile edges; returns boxes, scores, labels and whether still cut.

    Two boxes join when they share a class, come from different tiles, overlap (or touch), one is
    cut on the side facing the other, and their extents across the seam match (1-D IoU >= SEAM_OVERLAP)."""
    candidates = torch.nonzero(cut.any(dim=1)).flatten()
    if len(candidates) < 2:
        return boxes, scores, labels, cut.any(dim=1)
    b, c, lab, tid = boxes[candidates], cut[candidates], labels[candidates], tile_ids[candidates]
    touching = (
        torch.minimum(b[:, None, 2:], b[None, :, 2:]) - torch.maximum(b[:, None, :2], b[None, :, :2]) >= -1.0
    ).all(-1)
    # i's right edge is cut and j lies to its right (j's left edge left of i's right edge), and so on per side.
    faces_x = (c[:, None, 2] & (b[None, :, 2] > b[:, None, 2])) | (c[:, None, 0] & (b[None, :, 0] < b[:, None, 0]))
    faces_y = (c[:, None, 3] & (b[None, :, 3] > b[:, None, 3])) | (c[:, None, 1] & (b[None, :, 1] < b[:, None, 1]))
    aligned_x = faces_x & (_axis_iou(b[:, 1], b[:, 3], b[:, 1], b[:, 3]) >= SEAM_OVERLAP)
    aligned_y = faces_y & (_axis_iou(b[:, 0], b[:, 2], b[:, 0], b[:, 2]) >= SEAM_OVERLAP)
    joined = touching & (aligned_x | aligned_y) & (lab[:, None] == lab[None]) & (tid[:, None] != tid[None])
    joined = joined | joined.T
    group = _components(joined)
    if torch.equal(group, torch.arange(len(candidates), device=group.device)):
        return boxes, scores, labels, cut.any(dim=1)
    union = b.clone()
    union[:, :2] = torch.full_like(b[:, :2], float("inf")).scatter_reduce(
        0, group[:, None].expand(-1, 2), b[:, :2], "amin"
    )[group]
    union[:, 2:] = torch.full_like(b[:, 2:], -float("inf")).scatter_reduce(
        0, group[:, None].expand(-1, 2), b[:, 2:], "amax"
    )[group]
    best = torch.zeros_like(scores[candidates]).scatter_reduce(0, group, scores[candidates], "amax")[group]
    leader = group == torch.arange(len(candidates), device=group.device)
    single = torch.bincount(group, minlength=len(candidates))[group] == 1
    drop = torch.zeros(len(boxes), dtype=torch.bool, device=boxes.device)
    drop[candidates[~leader]] = True
    boxes, scores, still_cut = boxes.clone(), scores.clone(), cut.any(dim=1).clone()
    boxes[candidates], scores[candidates] = union, best
    still_cut[candidates] = single  # a joined object is whole now
    keep = ~drop
    return boxes[keep], scores[keep], labels[keep], still_cut[keep]


def drop_fragments(boxes: Tensor, labels: Tensor, cut: Tensor) -> Tensor:
    """(K,) bool keep: a cut box mostly inside a whole (uncut) box of its class is a fragment of that object."""
    keep = torch.ones(len(boxes), dtype=torch.bool, device=boxes.device)
    parts, wholes = torch.nonzero(cut).flatten(), torch.nonzero(~cut).flatten()
    if not len(parts) or not len(wholes):
        return keep
    p, w = boxes[parts], boxes[wholes]
    inter = (
        (torch.minimum(p[:, None, 2:], w[None, :, 2:]) - torch.maximum(p[:, None, :2], w[None, :, :2]))
        .clamp(min=0)
        .prod(-1)
    )
    area = ((p[:, 2:] - p[:, :2]).prod(-1)).clamp(min=1e-6)
    inside = (inter / area[:, None] >= INSIDE) & (labels[parts][:, None] == labels[wholes][None])
    keep[parts[inside.any(dim=1)]] = False
    return keep


def merge_detections(
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor,
    windows: Tensor,
    tile_ids: Tensor,
    frame: tuple[int, int],
    iou_threshold: float,
    max_detections: int,
    merge: Merge = "nms",
) -> dict[str, Tensor]:
    """One frame's detections from all its tiles (boxes in frame pixels), best first, at most `max_detections`.

    windows (K, 4): the tile window of each box; tile_ids (K,): its tile's index (the full-frame pass
    has its own id and the frame as window)."""
    if merge not in MERGES:
        raise MultiboxError(f"merge: expected one of {', '.join(MERGES)}, got {merge!r}")
    if merge == "merge" and len(boxes):
        cut = cut_edges(boxes, windows, frame)
        boxes, scores, labels, still_cut = join_cut_halves(boxes, scores, labels, cut, tile_ids)
        keep = drop_fragments(boxes, labels, still_cut)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    keep = batched_nms(boxes, scores, labels, iou_threshold)[:max_detections]  # sorted by score
    return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}
