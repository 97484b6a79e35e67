"""Default boxes (anchors): per-level scales and aspect ratios laid over each feature map.

Boxes are (A, 4) in normalised ``cxcywh`` (fractions of the input width and height),
ordered level-major, then location (row-major), then box — the order of the heads'
outputs. Computed once per configuration and shared by the encoder and the decoder.

Scales are fractions of the input's *shorter side*, so default boxes stay square in
pixels on non-square inputs; for square inputs this is exactly torchvision's
``DefaultBoxGenerator`` (which scales each side separately).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from multibox.errors import MultiboxError


@dataclass(frozen=True)
class AnchorLayout:
    """Everything that fixes the default boxes except the feature-map sizes."""

    aspect_ratios: tuple[tuple[float, ...], ...]  # per level; r adds boxes r and 1/r
    scales: tuple[float, ...] | None  # per level plus one more (for the sqrt(s_k s_k+1) box)
    steps: tuple[float, ...] | None = None  # per level, pixels between centres; None: the feature stride
    clip: bool = True  # clamp w, h to [0, 1] as torchvision does
    # Instead of scales: per level, explicit square sizes (fractions of the shorter side), each
    # with its aspect-ratio pairs — scale-aware SSD's per-level pixel boxes, RetinaNet's octave scales.
    box_sizes: tuple[tuple[float, ...], ...] | None = None

    @property
    def num_levels(self) -> int:
        return len(self.aspect_ratios)

    def boxes_per_location(self) -> list[int]:
        """Paper form: 2 squares (s_k and sqrt(s_k s_k+1)) plus 2 per aspect ratio, per level.
        Explicit form: each listed size's square plus 2 per aspect ratio."""
        if self.box_sizes is not None:
            return [
                len(sizes) * (1 + 2 * len(ratios))
                for sizes, ratios in zip(self.box_sizes, self.aspect_ratios, strict=True)
            ]
        return [2 + 2 * len(ratios) for ratios in self.aspect_ratios]


def linear_scales(min_scale: float, max_scale: float, num_levels: int) -> list[float]:
    """The paper's scales s_k, evenly spaced from min to max, then 1.0 for the last level's extra box."""
    if num_levels == 1:
        return [min_scale, 1.0]
    step = (max_scale - min_scale) / (num_levels - 1)
    return [min_scale + step * k for k in range(num_levels)] + [1.0]


def make_layout(
    aspect_ratios: list[list[float]],
    scales: list[float] | None = None,
    min_scale: float | None = None,
    max_scale: float | None = None,
    steps: list[float] | None = None,
    clip: bool = True,
    box_sizes: list[list[float]] | None = None,
) -> AnchorLayout:
    """Check a layout's lengths and fill the scales from min/max when no list is given."""
    levels = len(aspect_ratios)
    if steps is not None and len(steps) != levels:
        raise MultiboxError(f"anchors.steps: expected {levels} values (one per level), got {len(steps)}")
    steps_tuple = tuple(float(s) for s in steps) if steps is not None else None
    ratios = tuple(tuple(float(r) for r in level) for level in aspect_ratios)
    if box_sizes is not None:
        if len(box_sizes) != levels or any(not sizes or min(sizes) <= 0 for sizes in box_sizes):
            raise MultiboxError(
                f"anchors.box_sizes: expected {levels} non-empty lists of positive sizes (one per level)"
            )
        sizes = tuple(tuple(float(v) for v in level) for level in box_sizes)
        return AnchorLayout(aspect_ratios=ratios, scales=None, steps=steps_tuple, clip=clip, box_sizes=sizes)
    if scales is None:
        if min_scale is None or max_scale is None:
            raise MultiboxError("anchors: give either anchors.scales or both anchors.min_scale and anchors.max_scale")
        scales = linear_scales(min_scale, max_scale, levels)
    if len(scales) != levels + 1:
        raise MultiboxError(f"anchors.scales: expected {levels + 1} values (one per level plus one), got {len(scales)}")
    return AnchorLayout(aspect_ratios=ratios, scales=tuple(float(s) for s in scales), steps=steps_tuple, clip=clip)


def _level_wh(layout: AnchorLayout, level: int, image_size: tuple[int, int]) -> Tensor:
    """(B, 2) normalised widths and heights of the boxes at one location of a level."""
    height, width = image_size
    short = min(height, width)
    ratios = layout.aspect_ratios[level]
    if layout.box_sizes is not None:
        sizes = []
        for s in layout.box_sizes[level]:
            sizes += [(s, s)] + [
                pair
                for r in ratios
                for pair in ((s * math.sqrt(r), s / math.sqrt(r)), (s / math.sqrt(r), s * math.sqrt(r)))
            ]
    else:
        assert layout.scales is not None  # a layout has either box_sizes or scales
        s_k, s_next = layout.scales[level], layout.scales[level + 1]
        s_prime = math.sqrt(s_k * s_next)
        sizes = [(s_k, s_k), (s_prime, s_prime)]
        for ratio in ratios:
            root = math.sqrt(ratio)
            sizes += [(s_k * root, s_k / root), (s_k / root, s_k * root)]
    wh = torch.tensor(sizes, dtype=torch.float64) * short
    wh = wh / torch.tensor([width, height], dtype=torch.float64)
    return wh.clamp(0.0, 1.0) if layout.clip else wh


def default_boxes(layout: AnchorLayout, feature_sizes: list[tuple[int, int]], image_size: tuple[int, int]) -> Tensor:
    """(A, 4) float32 normalised cxcywh default boxes for an (H, W) input.

    Centre of cell (i, j) at level k: ((j + 0.5) * step_x / W, (i + 0.5) * step_y / H), where the
    step is the configured one or else the feature map's stride W / f_w, H / f_h.
    """
    if len(feature_sizes) != layout.num_levels:
        raise MultiboxError(
            f"anchors: the model has {len(feature_sizes)} feature levels "
            f"but anchors.aspect_ratios has {layout.num_levels}"
        )
    height, width = image_size
    per_level = []
    for level, (f_h, f_w) in enumerate(feature_sizes):
        if layout.steps is not None:
            step_x, step_y = layout.steps[level] / width, layout.steps[level] / height
        else:
            step_x, step_y = 1.0 / f_w, 1.0 / f_h
        cx = (torch.arange(f_w, dtype=torch.float64) + 0.5) * step_x
        cy = (torch.arange(f_h, dtype=torch.float64) + 0.5) * step_y
        grid_y, grid_x = torch.meshgrid(cy, cx, indexing="ij")
        centres = torch.stack((grid_x.reshape(-1), grid_y.reshape(-1)), dim=-1)  # (HW, 2)
        wh = _level_wh(layout, level, image_size)  # (B, 2)
        boxes = torch.cat(
            (centres[:, None, :].expand(-1, wh.shape[0], 2), wh[None].expand(centres.shape[0], -1, 2)), dim=-1
        )
        per_level.append(boxes.reshape(-1, 4))
    return torch.cat(per_level).to(torch.float32)


def count_boxes(layout: AnchorLayout, feature_sizes: list[tuple[int, int]]) -> list[int]:
    """Default boxes per level (H * W * boxes per location)."""
    return [h * w * b for (h, w), b in zip(feature_sizes, layout.boxes_per_location(), strict=True)]
