"""Scale-aware default boxes: fit per-level box sizes and aspect ratios to a dataset (up2metric/scale-aware-SSD).

The model's levels and feature maps stay as they are; only the boxes laid over them change, as
``anchors.box_sizes`` (pixels at the input, per level) and ``anchors.aspect_ratios``. The goal is
the best possible recall of the matcher: the share of ground-truth boxes whose best IoU with any
default box reaches ``loss.iou_threshold``, for at most as many default boxes as before.

Best IoUs are exact and cheap: on a level, the IoU of a box with a default box of a given shape
only falls as their centres move apart along x or y, and the centres form a separable grid, so the
best default box of each shape is the one at the nearest column and nearest row. A gt box's best
IoU is thus the max over (level, shape) of one closed-form IoU — no (gt x default boxes) matrix,
which also keeps 8-megapixel layouts (788k default boxes) fast.

The search: candidate sizes log-spaced over the gt sizes, a few aspect-ratio sets, a greedy choice
of (level, size) by coverage gained per default box spent, a swap pass, then coordinate ascent over
each level's ratio set. A fit that does not beat the starting layout on the whole set is dropped.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from multibox.boxes.anchors import AnchorLayout, count_boxes, default_boxes
from multibox.config import Config
from multibox.data.records import DetectionSet
from multibox.data.stats import LARGE, SMALL, normalised_boxes
from multibox.errors import MultiboxError

log = logging.getLogger(__name__)

RATIO_SETS: tuple[tuple[float, ...], ...] = ((), (2.0,), (3.0,), (1.5,), (2.0, 3.0), (1.5, 3.0))
IOU_WEIGHT = 0.1  # score = covered boxes + IOU_WEIGHT * sum of best IoUs: IoU only breaks coverage ties
MIN_GAIN = 1e-3  # a (level, size) must add this share of the boxes to the score to earn its default boxes
SHARED_HEAD_MODELS = ("ssd_resnet50_fpn",)  # one head for all levels: equal boxes per location


@dataclass(frozen=True)
class Grid:
    """One level's default-box centres in normalised units: count and spacing along x and y."""

    columns: int
    rows: int
    step_x: float
    step_y: float

    def offsets(self, centres: Tensor) -> Tensor:
        """(G, 2) |distance| of each (normalised cx, cy) to its nearest default-box centre on this level."""
        j = torch.floor(centres[:, 0] / self.step_x).clamp(0, self.columns - 1)
        i = torch.floor(centres[:, 1] / self.step_y).clamp(0, self.rows - 1)
        return torch.stack(
            ((centres[:, 0] - (j + 0.5) * self.step_x).abs(), (centres[:, 1] - (i + 0.5) * self.step_y).abs()), 1
        )


def level_grids(layout: AnchorLayout, feature_sizes: list[tuple[int, int]], image_size: tuple[int, int]) -> list[Grid]:
    """Each level's centre grid, as :func:`multibox.boxes.anchors.default_boxes` lays it."""
    height, width = image_size
    grids = []
    for level, (f_h, f_w) in enumerate(feature_sizes):
        if layout.steps is not None:
            grids.append(Grid(f_w, f_h, layout.steps[level] / width, layout.steps[level] / height))
        else:
            grids.append(Grid(f_w, f_h, 1.0 / f_w, 1.0 / f_h))
    return grids


def iou_at_offset(gt_wh: Tensor, offsets: Tensor, shapes_wh: Tensor) -> Tensor:
    """(G, S) IoU of gt boxes (G, 2: w, h) and default boxes of shapes (S, 2) centred `offsets` (G, 2) away."""
    gw, gh = gt_wh[:, 0:1], gt_wh[:, 1:2]
    dx, dy = offsets[:, 0:1], offsets[:, 1:2]
    aw, ah = shapes_wh[None, :, 0], shapes_wh[None, :, 1]
    ix = (torch.minimum(gw / 2, dx + aw / 2) - torch.maximum(-gw / 2, dx - aw / 2)).clamp(min=0)
    iy = (torch.minimum(gh / 2, dy + ah / 2) - torch.maximum(-gh / 2, dy - ah / 2)).clamp(min=0)
    inter = ix * iy
    return inter / (gw * gh + aw * ah - inter).clamp(min=1e-12)


def level_shapes(layout: AnchorLayout, image_size: tuple[int, int]) -> list[Tensor]:
    """Per level, the (B, 2) normalised w, h of the boxes at one location (taken from default_boxes itself)."""
    one_cell = default_boxes(layout, [(1, 1)] * layout.num_levels, image_size).double()[:, 2:]
    return list(torch.split(one_cell, layout.boxes_per_location()))


def best_layout_ious(
    gt_xyxy: Tensor, layout: AnchorLayout, feature_sizes: list[tuple[int, int]], image_size: tuple[int, int]
) -> Tensor:
    """(G,) best IoU of each normalised xyxy gt box with any of the layout's default boxes (exact).

    From the layout's geometry (the nearest cell centres of each level), without building the default boxes: the
    search calls it for every candidate layout. ``data.stats.best_default_box_ious`` is the brute-force form on
    built boxes, and the tests hold the two equal."""
    gt = gt_xyxy.double()
    centres, wh = (gt[:, :2] + gt[:, 2:]) / 2, gt[:, 2:] - gt[:, :2]
    best = torch.zeros(len(gt), dtype=torch.float64)
    for grid, shapes in zip(
        level_grids(layout, feature_sizes, image_size), level_shapes(layout, image_size), strict=True
    ):
        if len(gt):
            best = torch.maximum(best, iou_at_offset(wh, grid.offsets(centres), shapes).max(dim=1).values)
    return best


def _ratio_shapes(size: Tensor, ratios: tuple[float, ...]) -> list[tuple[Tensor, Tensor]]:
    """Pixel (w, h) of a square of side `size` and of each ratio pair, as ``_level_wh`` builds them."""
    shapes = [(size, size)]
    for r in ratios:
        root = math.sqrt(r)
        shapes += [(size * root, size / root), (size / root, size * root)]
    return shapes


@dataclass
class _Problem:
    """The search's precomputed tables on a sample of gt boxes."""

    sizes: Tensor  # (S,) candidate square sizes, input pixels
    ratio_sets: list[tuple[float, ...]]
    ious: Tensor  # (L, R, S, G) best IoU of each gt with (level, ratio set, size)
    locations: list[int]  # per level, H * W
    threshold: float
    shared_head: bool

    def score(self, best: Tensor) -> Tensor:
        """Covered gt + IOU_WEIGHT * sum of best IoUs, over the last dimension."""
        return (best >= self.threshold).sum(-1).double() + IOU_WEIGHT * best.sum(-1)

    def cost(self, ratio_index: list[int]) -> list[int]:
        """Default boxes one size costs on each level, given each level's ratio set."""
        return [n * (1 + 2 * len(self.ratio_sets[r])) for n, r in zip(self.locations, ratio_index, strict=True)]


def _build_problem(
    gt: Tensor,
    grids: list[Grid],
    image_size: tuple[int, int],
    sizes: Tensor,
    ratio_sets: list[tuple[float, ...]],
    threshold: float,
    shared_head: bool,
) -> _Problem:
    height, width = image_size
    centres, wh = (gt[:, :2] + gt[:, 2:]) / 2, gt[:, 2:] - gt[:, :2]
    ious = torch.zeros(len(grids), len(ratio_sets), len(sizes), len(gt))
    for level, grid in enumerate(grids):
        offsets = grid.offsets(centres)
        for r, ratios in enumerate(ratio_sets):
            per_shape = [
                iou_at_offset(wh, offsets, torch.stack(((w / width).clamp(max=1), (h / height).clamp(max=1)), 1))
                for w, h in _ratio_shapes(sizes, ratios)
            ]
            ious[level, r] = torch.stack(per_shape).amax(dim=0).T.float()
    return _Problem(sizes, ratio_sets, ious, [g.rows * g.columns for g in grids], threshold, shared_head)


def _swap_pass(problem: _Problem, table: Tensor, chosen: list[list[int]]) -> list[list[int]]:
    """Replace single chosen sizes by better ones on the same level until none helps (same cost)."""
    for _ in range(3):
        improved = False
        for level in range(len(chosen)):
            for slot in range(len(chosen[level])):
                others = [
                    table[k, s] for k in range(len(chosen)) for t, s in enumerate(chosen[k]) if (k, t) != (level, slot)
                ]
                rest = torch.stack(others).amax(0) if others else torch.zeros(table.shape[-1])
                scores = problem.score(torch.maximum(rest[None], table[level]))
                scores[[s for t, s in enumerate(chosen[level]) if t != slot]] = -1.0  # no duplicate sizes
                best = int(scores.argmax())
                if scores[best] > scores[chosen[level][slot]] + 1e-6:
                    chosen[level][slot], improved = best, True
        if not improved:
            break
    return chosen


def _greedy(problem: _Problem, ratio_index: list[int], budget: int) -> tuple[list[list[int]], float] | None:
    """Sizes per level for fixed ratio sets: one per level first, then the best gain per box while the budget lasts."""
    table = problem.ious[torch.arange(len(ratio_index)), torch.tensor(ratio_index)]  # (L, S, G)
    cost = problem.cost(ratio_index)
    if sum(cost) > budget:
        return None
    chosen = [[int(problem.score(table[k]).argmax())] for k in range(len(cost))]
    chosen = _swap_pass(problem, table, chosen)
    spent, min_gain = sum(cost), MIN_GAIN * table.shape[-1]
    best = torch.stack([table[k, s] for k in range(len(cost)) for s in chosen[k]]).amax(0)
    while True:
        gains = problem.score(torch.maximum(best[None, None], table)) - problem.score(best)  # (L, S)
        for k, sizes in enumerate(chosen):
            gains[k, sizes] = -1.0
        if problem.shared_head:  # one more size on every level at once
            picks = {k: int(gains[k].argmax()) for k in range(len(cost))}
            step_cost, gain = sum(cost), float(sum(gains[k, s] for k, s in picks.items()))
        else:
            per_box = gains / torch.tensor(cost, dtype=gains.dtype)[:, None]
            per_box[torch.tensor(cost) > budget - spent] = -1.0
            k, s = divmod(int(per_box.argmax()), gains.shape[1])
            picks, step_cost, gain = {k: s}, cost[k], float(gains[k, s])
        if gain < min_gain or spent + step_cost > budget:
            break
        for k, s in picks.items():
            chosen[k].append(s)
            best = torch.maximum(best, table[k, s])
        spent += step_cost
    chosen = _swap_pass(problem, table, chosen)
    best = torch.stack([table[k, s] for k in range(len(cost)) for s in chosen[k]]).amax(0)
    return chosen, float(problem.score(best))


def _search(problem: _Problem, start: list[int], budget: int) -> tuple[list[int], list[list[int]]] | None:
    """Coordinate ascent over each level's ratio set (all levels at once for a shared head)."""
    ratios, result = list(start), _greedy(problem, start, budget)
    levels = [[k] for k in range(len(start))] if not problem.shared_head else [list(range(len(start)))]
    for _ in range(2):
        improved = False
        for group in levels:
            for r in range(len(problem.ratio_sets)):
                trial = [r if k in group else ratios[k] for k in range(len(ratios))]
                if trial == ratios:
                    continue
                candidate = _greedy(problem, trial, budget)
                if candidate is not None and (result is None or candidate[1] > result[1] + 1e-6):
                    ratios, result, improved = trial, candidate, True
        if not improved:
            break
    return None if result is None else (ratios, result[0])


@dataclass
class AnchorFit:
    """A fit's outcome. ``box_sizes`` is None when nothing beat the starting layout (which is then kept)."""

    box_sizes: list[list[float]] | None  # per level, square sizes in input pixels
    aspect_ratios: list[list[float]] | None
    boxes_before: int
    boxes_after: int
    input_size: tuple[int, int]
    iou_threshold: float
    buckets: dict[str, dict[str, float]] = field(default_factory=dict)  # all/small/medium/large: boxes, before, after

    @property
    def changed(self) -> bool:
        return self.box_sizes is not None


def _candidate_sizes(gt: Tensor, layout: AnchorLayout, image_size: tuple[int, int], count: int = 24) -> Tensor:
    """Square sizes (input pixels, 0.1 px steps) log-spaced over the gt sizes, plus the layout's own explicit sizes."""
    height, width = image_size
    side = ((gt[:, 2] - gt[:, 0]) * width * (gt[:, 3] - gt[:, 1]) * height).sqrt()
    low, high = torch.quantile(side, torch.tensor([0.01, 0.99], dtype=side.dtype)).tolist()
    sizes = np.geomspace(max(low * 0.75, 1.0), max(high * 1.33, 2.0), count).tolist()
    if layout.box_sizes is not None:
        sizes += [s * min(image_size) for level in layout.box_sizes for s in level]
    return torch.tensor(sorted({round(s, 1) for s in sizes}), dtype=torch.float64)


def _ratio_candidates(layout: AnchorLayout, shared_head: bool) -> tuple[list[tuple[float, ...]], list[int]]:
    """RATIO_SETS plus the layout's own, and each level's starting index (its current set)."""
    sets = list(RATIO_SETS)
    for ratios in layout.aspect_ratios:
        if tuple(ratios) not in sets:
            sets.append(tuple(ratios))
    start = [sets.index(tuple(ratios)) for ratios in layout.aspect_ratios]
    return sets, [start[0]] * len(start) if shared_head else start


def bucket_coverage(areas: np.ndarray, before: Tensor, after: Tensor, threshold: float) -> dict[str, dict[str, float]]:
    """Coverage before/after overall and per COCO size bucket (box area in original pixels, as COCO evaluation)."""
    masks = {
        "all": np.ones(len(areas), bool),
        "small": areas < SMALL,
        "medium": (areas >= SMALL) & (areas < LARGE),
        "large": areas >= LARGE,
    }
    table = {}
    for name, mask in masks.items():
        m = torch.from_numpy(mask)
        count = int(mask.sum())
        share = [float((best[m] >= threshold).double().mean()) if count else float("nan") for best in (before, after)]
        table[name] = {"boxes": count, "before": share[0], "after": share[1]}
    return table


def fit_anchors(
    config: Config,
    dataset: DetectionSet,
    geometry: tuple[AnchorLayout, list[tuple[int, int]]],
    budget: int | None = None,
    sample: int = 5000,
    seed: int = 0,
) -> AnchorFit:
    """Fit ``anchors.box_sizes``/``aspect_ratios`` to `dataset`'s boxes at the config's input size.

    `geometry` is the config's layout and the model's feature-map sizes (``models.detector.model_geometry``).
    Keeps the model's levels and centres; at most `budget` default boxes (default: the current count).
    The search sees a seeded sample of at most `sample` boxes; the final check uses them all.
    """
    layout, features = geometry
    image_size = (int(config.data.input_size[0]), int(config.data.input_size[1]))
    threshold = config.loss.iou_threshold
    gt, areas = normalised_boxes(dataset)
    valid = ((gt[:, 2:] - gt[:, :2]) > 0).all(dim=1)
    if not bool(valid.any()):
        raise MultiboxError("anchors fit: the training set has no boxes to fit default boxes to")
    boxes_before = sum(count_boxes(layout, features))
    budget = boxes_before if budget is None else int(budget)
    pool = gt[valid]
    pool = pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))[:sample]]
    shared_head = config.model.name in SHARED_HEAD_MODELS
    ratio_sets, start = _ratio_candidates(layout, shared_head)
    sizes = _candidate_sizes(pool, layout, image_size)
    problem = _build_problem(
        pool, level_grids(layout, features, image_size), image_size, sizes, ratio_sets, threshold, shared_head
    )
    found = _search(problem, start, budget)
    before = best_layout_ious(gt, layout, features, image_size)
    fit = AnchorFit(
        None, None, boxes_before, boxes_before, image_size, threshold, bucket_coverage(areas, before, before, threshold)
    )
    if found is None:
        return fit
    ratio_index, chosen = found
    box_sizes = [sorted(float(sizes[s]) for s in level) for level in chosen]
    aspect_ratios = [list(ratio_sets[r]) for r in ratio_index]
    fitted = _fitted_layout(layout, box_sizes, aspect_ratios, image_size)
    after = best_layout_ious(gt, fitted, features, image_size)
    key = lambda best: (int((best >= threshold).sum()), float(best.mean()))  # noqa: E731
    if key(after) <= key(before):
        return fit
    return AnchorFit(
        box_sizes,
        aspect_ratios,
        boxes_before,
        sum(count_boxes(fitted, features)),
        image_size,
        threshold,
        bucket_coverage(areas, before, after, threshold),
    )


def _fitted_layout(
    layout: AnchorLayout, box_sizes: list[list[float]], aspect_ratios: list[list[float]], image_size: tuple[int, int]
) -> AnchorLayout:
    """The layout the config will resolve to: pixel sizes as fractions of the shorter side, same steps and clip."""
    from multibox.boxes.anchors import make_layout

    short = min(image_size)
    steps = list(layout.steps) if layout.steps is not None else None
    return make_layout(
        aspect_ratios, steps=steps, clip=layout.clip, box_sizes=[[s / short for s in level] for level in box_sizes]
    )


def fitted_config(config: Config, fit: AnchorFit) -> Config:
    """A copy of `config` with the fitted anchors (and anchors.auto off: the boxes are now explicit)."""
    out = config.model_copy(deep=True)
    out.anchors.auto = False
    if fit.box_sizes is not None and fit.aspect_ratios is not None:  # fit.changed
        out.anchors.box_sizes = [list(level) for level in fit.box_sizes]
        out.anchors.aspect_ratios = [list(level) for level in fit.aspect_ratios]
        out.anchors.scales = out.anchors.sizes = out.anchors.min_scale = out.anchors.max_scale = None
    return out
