"""Sliced inference: a large frame cut into overlapping tiles, run as batches, detections merged.

Each tile goes through the network at the model's input size (a tile of that size is not
resized at all, so objects keep their native pixels), its detections are shifted back into the
frame and merged (see :mod:`multibox.boxes.tiling`). With ``full_frame`` the whole frame,
downscaled to the input size, is one more "tile", for objects larger than a tile.
Frames of different sizes in one call each get their own grid.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from multibox.boxes.tiling import MERGES, Merge, check_overlap, check_tile, merge_detections, tile_grid
from multibox.data.dataset import read_image, warn_skipped
from multibox.data.records import DetectionSet
from multibox.errors import MultiboxError
from multibox.metrics.coco import DetectionAccumulator
from multibox.metrics.evaluation import Evaluation, score
from multibox.models.detector import SSDDetector
from multibox.models.factory import feature_map_sizes

DEFAULT_MERGE: Merge = "nms"  # measured on the synthetic large-frame set: see benchmarks/RESULTS.md
_WARNED_LARGE: set[tuple[int, int, int, int]] = set()


@dataclass(frozen=True)
class Slicing:
    """How frames are sliced: tile (H, W) in frame pixels, overlap as a fraction of the tile,
    an extra downscaled full-frame pass, and the merge of the tiles' detections."""

    tile: tuple[int, int]
    overlap: float = 0.2
    full_frame: bool = False
    merge: Merge = DEFAULT_MERGE

    def __post_init__(self) -> None:
        check_overlap(self.overlap)
        if self.merge not in MERGES:
            raise MultiboxError(f"merge: expected one of {', '.join(MERGES)}, got {self.merge!r}")
        if len(self.tile) != 2 or min(int(v) for v in self.tile) < 1:
            raise MultiboxError(f"tile: expected HxW with positive sides, got {self.tile}")


def smallest_stride(detector: SSDDetector, input_size: tuple[int, int]) -> int:
    """Pixels of the network input per cell of its finest feature map (a meta-device dry run)."""
    finest = feature_map_sizes(detector.model, input_size)[0]
    return max(1, min(int(input_size[0]) // max(finest[0], 1), int(input_size[1]) // max(finest[1], 1)))


def check_tile_for(
    tile: tuple[int, int], detector: SSDDetector, input_size: tuple[int, int], key: str = "tile"
) -> None:
    """Refuse a tile the network cannot see anything in (smaller than its smallest stride)."""
    check_tile(tile, smallest_stride(detector, input_size), key)


def check_slicing(slicing: Slicing, detector: SSDDetector, input_size: tuple[int, int]) -> Slicing:
    """`slicing` once its tile is checked against the network (see :func:`check_tile_for`)."""
    check_tile_for(slicing.tile, detector, input_size)
    return slicing


def _warn_large(tile: tuple[int, int], frame: tuple[int, int]) -> None:
    key = (*tile, *frame)
    if (tile[0] > frame[0] or tile[1] > frame[1]) and key not in _WARNED_LARGE:
        _WARNED_LARGE.add(key)
        warnings.warn(
            f"tile: {tile[0]}x{tile[1]} is larger than a {frame[0]}x{frame[1]} frame; "
            "the frame itself is used along that side",
            UserWarning,
            stacklevel=3,
        )


def _to_input(crops: list[Tensor], input_size: tuple[int, int]) -> Tensor:
    """uint8 (3, h, w) crops as one float batch at the network's input size (bilinear, as cv2.INTER_LINEAR)."""
    resized = []
    for crop in crops:
        image = crop.float().div_(255.0)[None]
        if tuple(image.shape[-2:]) != tuple(input_size):
            image = F.interpolate(image, size=tuple(input_size), mode="bilinear", align_corners=False)
        resized.append(image)
    return torch.cat(resized)


@torch.inference_mode()
def detect_sliced(
    detector: SSDDetector,
    frames: Sequence[Tensor],
    input_size: tuple[int, int],
    slicing: Slicing,
    batch_size: int = 8,
    dtype: torch.dtype = torch.float32,
) -> list[dict[str, Tensor]]:
    """Detections per frame (uint8 (3, H, W) tensors on the detector's device, any sizes), boxes xyxy in
    frame pixels, labels 1..C-1 as :meth:`SSDDetector.detect` gives them, best first."""
    jobs: list[tuple[int, Tensor, int]] = []  # (frame index, window xyxy, tile id)
    for index, frame in enumerate(frames):
        height, width = int(frame.shape[-2]), int(frame.shape[-1])
        _warn_large(slicing.tile, (height, width))
        windows = tile_grid(height, width, slicing.tile, slicing.overlap)
        jobs += [(index, window, tile_id) for tile_id, window in enumerate(windows)]
        if slicing.full_frame and len(windows) > 1:
            jobs.append((index, torch.tensor([0, 0, width, height]), len(windows)))
    found: list[list[tuple[dict[str, Tensor], Tensor, int]]] = [[] for _ in frames]
    for start in range(0, len(jobs), max(1, int(batch_size))):
        chunk = jobs[start : start + max(1, int(batch_size))]
        crops = [frames[i][:, int(w[1]) : int(w[3]), int(w[0]) : int(w[2])] for i, w, _ in chunk]
        batch = _to_input(crops, input_size).to(dtype)
        sizes = torch.tensor([[int(w[3] - w[1]), int(w[2] - w[0])] for _, w, _ in chunk], device=batch.device)
        box_regression, cls_logits = detector(batch)
        for (index, window, tile_id), result in zip(
            chunk, detector.postprocess(box_regression.float(), cls_logits.float(), sizes), strict=True
        ):
            found[index].append((result, window, tile_id))
    return [
        _merge_frame(parts, (int(frame.shape[-2]), int(frame.shape[-1])), detector, slicing)
        for parts, frame in zip(found, frames, strict=True)
    ]


def _merge_frame(
    parts: list[tuple[dict[str, Tensor], Tensor, int]], frame: tuple[int, int], detector: SSDDetector, slicing: Slicing
) -> dict[str, Tensor]:
    """Shift each tile's boxes into the frame and merge them."""
    device = torch.device(str(detector.default_boxes.device))
    boxes, scores, labels, windows, tile_ids = [], [], [], [], []
    for result, window, tile_id in parts:
        count = len(result["scores"])
        window = window.to(device=device, dtype=torch.float32)
        boxes.append(result["boxes"] + window[:2].repeat(2))
        scores.append(result["scores"])
        labels.append(result["labels"])
        windows.append(window.expand(count, 4))
        tile_ids.append(torch.full((count,), tile_id, dtype=torch.int64, device=device))
    if not boxes:
        empty = torch.zeros((0, 4), device=device)
        return {"boxes": empty, "scores": empty[:, 0], "labels": torch.zeros(0, dtype=torch.int64, device=device)}
    settings = detector.settings
    return merge_detections(
        torch.cat(boxes),
        torch.cat(scores),
        torch.cat(labels),
        torch.cat(windows),
        torch.cat(tile_ids),
        (int(frame[0]), int(frame[1])),
        settings.nms_threshold,
        settings.max_detections,
        slicing.merge,
    )


def frame_tensor(image: np.ndarray, device: torch.device) -> Tensor:
    """HxWx3 uint8 RGB array as a (3, H, W) uint8 tensor on `device` (it travels as bytes)."""
    return torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1)


def evaluate_sliced(
    detector: SSDDetector,
    dataset: DetectionSet,
    category_ids: list[int],
    class_names: list[str],
    input_size: tuple[int, int],
    slicing: Slicing,
    device: torch.device,
    batch_size: int = 8,
    progress: Iterable[Any] | None = None,
    metric: str = "coco",
) -> Evaluation:
    """The :class:`Evaluation` of sliced inference over a dataset's frames read at native resolution (scored as
    `multibox eval` scores without slicing, `metric` being eval.metric); unreadable frames are warned about and
    left out."""
    detector = detector.to(device).eval()
    check_slicing(slicing, detector, input_size)
    lookup = torch.tensor([0, *category_ids], dtype=torch.long, device=device)
    accumulator = DetectionAccumulator()
    records = list(dataset.records)
    frames_per_call = (
        max(1, batch_size // max(1, len(tile_grid(records[0].height, records[0].width, slicing.tile, slicing.overlap))))
        if records
        else 1
    )
    chunks = [records[i : i + frames_per_call] for i in range(0, len(records), frames_per_call)]
    skipped = 0
    for chunk in progress(chunks) if callable(progress) else chunks:
        frames, ids = [], []
        for record in chunk:
            try:
                frames.append(frame_tensor(read_image(record.file, (record.height, record.width)), device))
                ids.append(int(record.image_id))
            except MultiboxError as error:
                warn_skipped(f"{record.file}: skipped, {str(error).split(': ', 1)[-1]}", str(record.file))
                skipped += 1
        if not frames:
            continue
        found = detect_sliced(detector, frames, input_size, slicing, batch_size)
        accumulator.add(
            ids, [d["boxes"] for d in found], [d["scores"] for d in found], [lookup[d["labels"]] for d in found]
        )
    return score(accumulator, dataset.to_coco_gt(), class_names, metric, skipped)
