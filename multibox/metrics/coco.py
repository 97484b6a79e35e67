"""COCO box metrics for validation and `multibox eval`, computed by faster-coco-eval.

faster-coco-eval gives the same 12 numbers as pycocotools (the tests check this) in a
fraction of the time, so validation can run every epoch. Detections are collected as
tensors and converted to COCO results once, at the end.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from faster_coco_eval import COCO, COCOeval_faster
from rich.console import Console
from rich.table import Table
from torch import Tensor

from multibox.errors import MultiboxError

METRIC_KEYS = (
    "map",
    "map_50",
    "map_75",
    "map_small",
    "map_medium",
    "map_large",
    "mar_1",
    "mar_10",
    "mar_100",
    "mar_small",
    "mar_medium",
    "mar_large",
)  # the 12 COCO stats, in COCOeval.stats order

METRIC_DESCRIPTIONS = {
    "map": "AP @[IoU=0.50:0.95 | area=all | maxDets=100]",
    "map_50": "AP @[IoU=0.50 | area=all | maxDets=100]",
    "map_75": "AP @[IoU=0.75 | area=all | maxDets=100]",
    "map_small": "AP @[IoU=0.50:0.95 | area=small | maxDets=100]",
    "map_medium": "AP @[IoU=0.50:0.95 | area=medium | maxDets=100]",
    "map_large": "AP @[IoU=0.50:0.95 | area=large | maxDets=100]",
    "mar_1": "AR @[IoU=0.50:0.95 | area=all | maxDets=1]",
    "mar_10": "AR @[IoU=0.50:0.95 | area=all | maxDets=10]",
    "mar_100": "AR @[IoU=0.50:0.95 | area=all | maxDets=100]",
    "mar_small": "AR @[IoU=0.50:0.95 | area=small | maxDets=100]",
    "mar_medium": "AR @[IoU=0.50:0.95 | area=medium | maxDets=100]",
    "mar_large": "AR @[IoU=0.50:0.95 | area=large | maxDets=100]",
}


def _quiet(*_args: Any, **_kwargs: Any) -> None:
    """faster-coco-eval's print hook: evaluation must not write to stdout."""


def _category_names(gt: dict, class_names: Sequence[str] | None) -> dict[int, str]:
    """Category id -> display name; `class_names` overrides gt's names in sorted-id order."""
    categories = sorted(gt.get("categories", []), key=lambda c: c["id"])
    if class_names is None:
        return {int(c["id"]): str(c.get("name", c["id"])) for c in categories}
    if len(class_names) != len(categories):
        raise ValueError(
            f"class_names has {len(class_names)} names but the ground truth has {len(categories)} categories"
        )
    return {int(c["id"]): str(name) for c, name in zip(categories, class_names, strict=True)}


def coco_evaluate(gt: dict, detections: list[dict], class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """COCO bbox metrics of `detections` (COCO results, xywh in original pixels) against `gt`.

    Returns ``{key: float for key in METRIC_KEYS}`` plus ``"per_class"``: category name ->
    AP@[.5:.95] (area all, 100 detections), in category-id order. As in COCO, a metric with
    no ground truth to measure (e.g. ``map_small`` when no gt box is small) is -1; a class
    with no ground truth is left out of ``per_class`` rather than reported as -1 or NaN.
    Empty detections give 0.0 wherever there is ground truth. Neither input is modified.
    """
    names = _category_names(gt, class_names)
    evaluator = _run_cocoeval(gt, detections)
    # strict=False: faster-coco-eval versions differ in what they append after the 12 standard stats.
    metrics: dict[str, Any] = {key: float(value) for key, value in zip(METRIC_KEYS, evaluator.stats, strict=False)}
    metrics["per_class"] = _per_class_ap(evaluator, names)
    return metrics


def evaluate_metrics(
    gt: dict, detections: list[dict], class_names: Sequence[str] | None = None, metric: str = "coco"
) -> dict[str, Any]:
    """COCO's metrics, plus VOC's (``voc_map``, ``voc_per_class``) when `metric` (eval.metric) is voc07 or voc."""
    metrics = coco_evaluate(gt, detections, class_names)
    if metric in ("voc07", "voc"):
        from multibox.metrics.voc import voc_evaluate

        metrics.update(voc_evaluate(gt, detections, class_names, use_07_metric=metric == "voc07"))
    return metrics


def _run_cocoeval(gt: dict, detections: list[dict]) -> COCOeval_faster:
    """A summarized bbox COCOeval of `detections` against `gt` (neither is modified)."""
    # Shallow copies: both COCO classes write bookkeeping keys into the annotation dicts.
    gt_copy = {**gt, "annotations": [dict(a) for a in gt.get("annotations", [])]}
    gt_copy.setdefault("categories", [])
    gt_copy.setdefault("images", [])
    coco_gt = COCO(gt_copy, print_function=_quiet)
    unknown = {int(d["image_id"]) for d in detections} - set(coco_gt.getImgIds())
    if unknown:
        raise MultiboxError(f"detections: {len(unknown)} image ids are not in the ground truth (e.g. {min(unknown)})")
    coco_dt = coco_gt.loadRes([dict(d) for d in detections])
    coco_dt.print_function = _quiet

    evaluator = COCOeval_faster(coco_gt, coco_dt, iouType="bbox", print_function=_quiet)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return evaluator


PR_IOU_THRESHOLDS = (0.5, 0.75)


def precision_recall_curves(
    gt: dict,
    detections: list[dict],
    class_names: Sequence[str] | None = None,
    iou_thresholds: Sequence[float] = PR_IOU_THRESHOLDS,
) -> dict[str, Any]:
    """COCO's interpolated precision at its 101 recall points (area all, 100 detections).

    Returns ``{"recall": [101 floats], "iou": {"0.50": {"precision": mean curve, "ap": float,
    "per_class": {name: {"precision": [...], "ap": float}}}, ...}}``. COCO's AP at an IoU is
    the mean of these 101 values, so ``ap`` (the area under ``precision``) equals ``map_50`` /
    ``map_75`` of :func:`coco_evaluate`; the mean curve averages the classes that have ground
    truth (others are left out, as in ``per_class``). With no ground truth at all, the mean
    curve is empty and ``ap`` is -1.
    """
    names = _category_names(gt, class_names)
    evaluator = _run_cocoeval(gt, detections)
    params = evaluator.params
    precision = evaluator.eval["precision"][
        :, :, :, params.areaRngLbl.index("all"), params.maxDets.index(100)
    ]  # (T, R, K)
    curves: dict[str, Any] = {"recall": [round(float(r), 2) for r in params.recThrs], "iou": {}}
    for threshold in iou_thresholds:
        matches = np.flatnonzero(np.isclose(params.iouThrs, threshold))
        if not matches.size:
            raise ValueError(f"IoU threshold {threshold} is not one of COCO's {params.iouThrs.tolist()}")
        at_iou = precision[matches[0]]  # (R, K)
        defined = (at_iou > -1).all(axis=0)  # classes with ground truth
        per_class = {
            names.get(int(cat_id), str(cat_id)): {"precision": at_iou[:, k].tolist(), "ap": float(at_iou[:, k].mean())}
            for k, cat_id in enumerate(params.catIds)
            if defined[k]
        }
        mean = at_iou[:, defined].mean(axis=1) if defined.any() else np.zeros(0)
        curves["iou"][f"{threshold:.2f}"] = {
            "precision": mean.tolist(),
            "ap": float(mean.mean()) if mean.size else -1.0,
            "per_class": per_class,
        }
    return curves


def _per_class_ap(evaluator: COCOeval_faster, names: dict[int, str]) -> dict[str, float]:
    """AP@[.5:.95] per category, averaged over the defined precision entries as COCO does."""
    precision = evaluator.eval["precision"]  # (T, R, K, A, M); -1 where undefined
    area_all = evaluator.params.areaRngLbl.index("all")
    max_dets = evaluator.params.maxDets.index(100)
    per_class: dict[str, float] = {}
    for k, cat_id in enumerate(evaluator.params.catIds):
        values = precision[:, :, k, area_all, max_dets]
        values = values[values > -1]
        if values.size:
            per_class[names.get(int(cat_id), str(cat_id))] = float(values.mean())
    return per_class


class DetectionAccumulator:
    """Collects detections batch by batch during validation, then hands them to COCO.

    Batches are kept as tensors (one row per box: image id, x1, y1, x2, y2, score,
    category id) and converted to COCO dicts once, so no Python work is done per box
    while the model runs. An image seen twice (DistributedSampler pads the last batch
    with repeats) keeps only its first detections.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget everything (call at the start of each validation epoch)."""
        self._rows: list[Tensor] = []
        self._seen: set[int] = set()

    def add(
        self,
        image_ids: Tensor | Sequence[int],
        boxes: Sequence[Tensor],
        scores: Sequence[Tensor],
        category_ids: Sequence[Tensor],
    ) -> None:
        """Add one batch: per image, xyxy boxes in original pixels, scores and dataset category ids."""
        ids = torch.as_tensor(image_ids).reshape(-1).tolist()
        if not len(ids) == len(boxes) == len(scores) == len(category_ids):
            raise ValueError(
                f"add(): {len(ids)} image ids but {len(boxes)} boxes, {len(scores)} scores, "
                f"{len(category_ids)} category ids"
            )
        fresh = [i for i, image_id in enumerate(ids) if image_id not in self._seen]
        self._seen.update(ids)
        if not fresh:
            return
        counts = [int(boxes[i].shape[0]) for i in fresh]
        if sum(counts) == 0:
            return
        # float32 on the model's device (MPS has no float64), one host copy per batch.
        rows = (
            torch.cat(
                [
                    torch.cat([boxes[i].reshape(-1, 4) for i in fresh]).float(),
                    torch.cat([scores[i].reshape(-1) for i in fresh]).float()[:, None],
                    torch.cat([category_ids[i].reshape(-1) for i in fresh]).float()[:, None],
                ],
                dim=1,
            )
            .cpu()
            .double()
        )
        id_column = torch.repeat_interleave(
            torch.tensor([ids[i] for i in fresh], dtype=torch.float64), torch.tensor(counts)
        )
        self._rows.append(torch.cat([id_column[:, None], rows], dim=1))

    def __len__(self) -> int:
        """Number of detections collected so far."""
        return sum(int(r.shape[0]) for r in self._rows)

    def _packed(self) -> np.ndarray:
        """All rows as one (M, 7) float64 array."""
        if not self._rows:
            return np.zeros((0, 7), dtype=np.float64)
        return torch.cat(self._rows).numpy()

    def gather(self) -> None:
        """Merge the detections of all DDP ranks into every rank's accumulator (no-op without DDP).

        An image that several ranks saw keeps the detections of the lowest rank that saw it.
        """
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return
        if torch.distributed.get_world_size() == 1:
            return
        parts: list[Any] = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(parts, (self._packed(), sorted(self._seen)))
        self._rows, self._seen = [torch.from_numpy(_merge_ranks(parts))], set()
        for _, seen in parts:
            self._seen.update(seen)

    def evaluated_ground_truth(self, ground_truth: dict) -> dict:
        """`ground_truth` restricted to the images this accumulator saw (on any rank, after `gather`).

        An image the loader could not read (skipped with a warning) is not a set of objects the
        detector missed, so it leaves the metrics instead of lowering recall. Unchanged when every
        image was seen."""
        images = [image for image in ground_truth["images"] if image["id"] in self._seen]
        if len(images) == len(ground_truth["images"]):
            return ground_truth
        annotations = [a for a in ground_truth["annotations"] if a["image_id"] in self._seen]
        return {**ground_truth, "images": images, "annotations": annotations}

    def results(self) -> list[dict[str, Any]]:
        """COCO results: image_id, category_id (ints), bbox [x, y, w, h] (0.01 px), score."""
        rows = self._packed()
        xywh = np.round(np.concatenate([rows[:, 1:3], rows[:, 3:5] - rows[:, 1:3]], axis=1), 2)
        image_ids = rows[:, 0].astype(np.int64).tolist()
        category_ids = rows[:, 6].astype(np.int64).tolist()
        scores = np.round(rows[:, 5], 5).tolist()
        return [
            {"image_id": i, "category_id": c, "bbox": b, "score": s}
            for i, c, b, s in zip(image_ids, category_ids, xywh.tolist(), scores, strict=True)
        ]


def _merge_ranks(parts: Sequence[tuple[np.ndarray, Sequence[int]]]) -> np.ndarray:
    """Concatenate per-rank rows, dropping images an earlier rank already reported."""
    kept: list[np.ndarray] = []
    earlier: set[int] = set()
    for rows, seen in parts:
        if earlier and len(rows):
            rows = rows[~np.isin(rows[:, 0].astype(np.int64), np.fromiter(earlier, dtype=np.int64))]
        kept.append(rows)
        earlier.update(seen)
    return np.concatenate(kept) if kept else np.zeros((0, 7), dtype=np.float64)


def _format_value(value: float) -> str:
    """COCO's -1 means 'nothing to measure'; show it as n/a rather than as a score."""
    return "n/a" if value < 0 else f"{value:.3f}"


def format_metrics_table(
    metrics: dict[str, Any], class_names: Sequence[str] | None = None, title: str = "COCO bbox metrics"
) -> Table:
    """The 12 COCO numbers with their descriptions, then a section of per-class AP.

    `class_names` (optional) orders the per-class rows and lists classes that have no
    ground truth (absent from ``metrics["per_class"]``) as n/a instead of hiding them.
    """
    table = Table(title=title, title_justify="left")
    table.add_column("metric", style="bold")
    table.add_column("description")
    table.add_column("value", justify="right")
    for key in METRIC_KEYS:
        if key in metrics:
            table.add_row(key, METRIC_DESCRIPTIONS[key], _format_value(float(metrics[key])))
    per_class: dict[str, float] = metrics.get("per_class", {})
    names = list(class_names) if class_names is not None else list(per_class)
    if names:
        table.add_section()
        for name in names:
            value = per_class.get(name)
            table.add_row(
                name,
                "AP @[IoU=0.50:0.95 | area=all | maxDets=100]",
                "n/a (no gt)" if value is None else _format_value(value),
            )
    return table


def print_metrics(
    metrics: dict[str, Any], console: Console | None = None, class_names: Sequence[str] | None = None
) -> None:
    """Print the metrics table (to `console`, or a new one on stdout)."""
    (console or Console()).print(format_metrics_table(metrics, class_names))
