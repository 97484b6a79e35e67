"""Tiled training: each sample is a crop of its frame at native resolution, augmented after the crop.

Downscaling an 8-megapixel frame to an SSD's 300-640 px input erases objects of 8-40 px; training
on crops keeps their pixels, and sliced inference (:mod:`multibox.engine.sliced`) sees them the
same way. The approach follows SAHI's slicing (Akyon et al., ICIP 2022, https://github.com/obss/sahi).

* ``uniform`` draws one tile of the grid that sliced inference uses; ``objects`` centres the crop
  near a randomly chosen object with probability ``object_prob`` (uniform otherwise), so frames
  with a few small objects in a lot of road still give crops with objects in them.
* Boxes cut by the crop are clipped; one keeping less than ``keep_min_visible`` of its area is
  dropped from the targets, and its visible part is marked to be ignored (label ``-label``): the
  loss neither matches it nor counts default boxes on it as background (see
  :func:`multibox.boxes.matching.ignored_defaults`).
* An epoch is still one sample per frame; the crop draws from the augmentation's own random
  stream, so workers, DDP ranks and resumed runs crop reproducibly, as they augment.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import cv2
import numpy as np


def starts(length: int, tile: int, overlap: float) -> list[int]:
    """Tile origins along one axis: stride ``tile * (1 - overlap)`` at most, the last tile ending at `length`.

    The tiles are spread evenly, so every overlap is at least the asked one."""
    if tile >= length:
        return [0]
    step = max(1.0, tile * (1.0 - overlap))
    count = math.ceil((length - tile) / step) + 1
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


_WARNED: set[tuple[int, int, int, int]] = set()


def crop_targets(
    boxes: np.ndarray, labels: np.ndarray, window: tuple[int, int, int, int], keep_min_visible: float
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (xyxy, frame pixels) and labels of a crop `window` (x0, y0, x1, y1), in crop pixels.

    Boxes outside are dropped; those cut keep their visible part; a box with less than
    `keep_min_visible` of its area visible gets label ``-label`` (an ignore region, not a target)."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    labels = np.asarray(labels, np.int64).reshape(-1)
    x0, y0, x1, y1 = window
    clipped = np.stack(
        [boxes[:, 0].clip(x0, x1), boxes[:, 1].clip(y0, y1), boxes[:, 2].clip(x0, x1), boxes[:, 3].clip(y0, y1)], 1
    )
    area = lambda b: (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)  # noqa: E731
    visible = area(clipped) / np.maximum(area(boxes), 1e-6)
    inside = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    labels = np.where(visible >= keep_min_visible, labels, -np.abs(labels))
    shifted = clipped[inside] - np.array([x0, y0, x0, y0], np.float32)
    return shifted, labels[inside]


class TileCrop:
    """A training transform that crops a tile of the frame, then runs `inner` (augmentation + resize).

    `tiles` is the config's ``data.tiles`` section. ``compose`` and ``reseed`` are the inner
    transform's, so the crop shares its seeded random stream (and checkpointed state)."""

    def __init__(self, tiles: Any, inner: Any) -> None:
        self.size = (int(tiles.size[0]), int(tiles.size[1]))
        self.overlap = float(tiles.overlap)
        self.sampler = str(tiles.sampler)
        self.object_prob = float(tiles.object_prob)
        self.keep_min_visible = float(tiles.keep_min_visible)
        self.scale = float(tiles.scale)
        self.inner = inner

    @property
    def compose(self) -> Any:
        return self.inner.compose

    def reseed(self, seed: int | None) -> None:
        self.inner.reseed(seed)

    def __call__(
        self, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        if self.scale != 1.0:
            height, width = image.shape[:2]
            size = (max(1, round(width * self.scale)), max(1, round(height * self.scale)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA if self.scale < 1 else cv2.INTER_LINEAR)
            boxes = boxes * np.array([size[0] / width, size[1] / height] * 2, np.float32)
        window = self.window(image.shape[:2], boxes)
        x0, y0, x1, y1 = window
        crop_boxes, crop_labels = crop_targets(boxes, labels, window, self.keep_min_visible)
        return self.inner(np.ascontiguousarray(image[y0:y1, x0:x1]), crop_boxes, crop_labels)

    def window(self, frame: tuple[int, int], boxes: np.ndarray) -> tuple[int, int, int, int]:
        """The crop (x0, y0, x1, y1): near an object (objects sampler, with probability object_prob) or a grid tile."""
        height, width = int(frame[0]), int(frame[1])
        tile_h, tile_w = min(self.size[0], height), min(self.size[1], width)
        if (tile_h, tile_w) != self.size and (*self.size, height, width) not in _WARNED:
            _WARNED.add((*self.size, height, width))
            warnings.warn(
                f"data.tiles.size: {self.size[0]}x{self.size[1]} is larger than a {height}x{width} frame; "
                "the frame itself is used along that side",
                UserWarning,
                stacklevel=2,
            )
        rng = self.compose.random_generator
        if self.sampler == "objects" and len(boxes) and rng.random() < self.object_prob:
            box = boxes[int(rng.integers(len(boxes)))]
            # The object's centre lands anywhere in the middle half of the crop.
            cx = (box[0] + box[2]) / 2 + rng.uniform(-0.25, 0.25) * tile_w
            cy = (box[1] + box[3]) / 2 + rng.uniform(-0.25, 0.25) * tile_h
            x0 = int(np.clip(round(cx - tile_w / 2), 0, width - tile_w))
            y0 = int(np.clip(round(cy - tile_h / 2), 0, height - tile_h))
        else:
            xs, ys = starts(width, tile_w, self.overlap), starts(height, tile_h, self.overlap)
            x0, y0 = xs[int(rng.integers(len(xs)))], ys[int(rng.integers(len(ys)))]
        return x0, y0, x0 + tile_w, y0 + tile_h
