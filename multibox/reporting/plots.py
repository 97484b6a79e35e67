"""Where a detector fails: precision-recall curves, a confusion matrix and a gallery of the worst images.

Figures are drawn on a bare matplotlib ``Figure`` with the Agg canvas (no display, pyplot's
global state untouched); boxes on images are drawn with :mod:`multibox.reporting.draw`.

The confusion matrix and the gallery share one matching of detections to ground truth per
image, at a score threshold (:data:`REPORT_SCORE_THRESHOLD`, the same default as
``multibox predict --conf``) and IoU 0.5, in two greedy passes over the detections, highest
score first. Pass one: each takes the unmatched ground-truth box *of its class* that it
overlaps most (IoU >= 0.5), as COCO's true positives do. Pass two: each detection left takes
the unmatched box of *any* class it overlaps most, so an object found only with the wrong
class is one confusion, not a miss plus a false alarm. A detection still unmatched is a
false positive (true class "background"), a ground-truth box still unmatched is a miss
(predicted "background"). Unmatched detections on a crowd (or VOC "difficult") box are
ignored, as COCO ignores them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torchvision.ops import box_iou

from multibox.data.dataset import read_image
from multibox.data.records import DetectionSet, ImageRecord
from multibox.errors import MultiboxError
from multibox.reporting.draw import class_color, draw_detections, save_image

log = logging.getLogger(__name__)

REPORT_SCORE_THRESHOLD = 0.3  # detections below this score are not shown or counted (as `predict --conf`)
MATCH_IOU_THRESHOLD = 0.5
BACKGROUND = -1  # class index of "nothing" in match outcomes
GALLERY_SIDE = 384  # pixels of each panel's longer side in the gallery


def check_score_threshold(value: float) -> float:
    """The report's score threshold must be a score: 0 <= value <= 1."""
    if not 0.0 <= value <= 1.0:
        raise MultiboxError(f"report score threshold {value:g}: must be between 0 and 1")
    return value


def match_image(
    gt_boxes: np.ndarray,
    gt_classes: np.ndarray,
    boxes: np.ndarray,
    classes: np.ndarray,
    scores: np.ndarray,
    iou_threshold: float = MATCH_IOU_THRESHOLD,
    ignore_boxes: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy matching of one image's detections to its ground truth (see the module docstring).

    Boxes are xyxy pixels, classes 0-based. Returns three arrays with one entry per outcome:
    true class, predicted class (:data:`BACKGROUND` for a false positive / a miss) and the IoU
    of the pair (0 for an unmatched box). Detections are all counted: filter by score first.
    """
    gt = torch.as_tensor(np.asarray(gt_boxes, np.float32).reshape(-1, 4))
    detections = torch.as_tensor(np.asarray(boxes, np.float32).reshape(-1, 4))
    gt_classes, classes = np.asarray(gt_classes, np.int64).reshape(-1), np.asarray(classes, np.int64).reshape(-1)
    overlaps = box_iou(detections, gt).numpy() if len(gt) and len(detections) else np.zeros((len(detections), len(gt)))
    overlaps = np.where(overlaps >= iou_threshold, overlaps, -1.0)
    order = np.argsort(-np.asarray(scores, np.float64).reshape(-1), kind="stable")
    gt_taken, det_taken = np.zeros(len(gt), bool), np.zeros(len(detections), bool)
    outcomes: list[tuple[int, int, float]] = []
    for same_class in (True, False):  # correct boxes first, then the wrong-class ones among the leftovers
        for d in order[~det_taken[order]]:
            candidates = np.where(gt_taken | (same_class & (gt_classes != classes[d])), -1.0, overlaps[d])
            g = int(candidates.argmax()) if len(gt) else -1
            if g >= 0 and candidates[g] >= 0:
                gt_taken[g] = det_taken[d] = True
                outcomes.append((int(gt_classes[g]), int(classes[d]), float(candidates[g])))
    ignored = np.zeros(len(detections), bool)
    if ignore_boxes is not None and len(ignore_boxes) and len(detections):
        crowd = torch.as_tensor(np.asarray(ignore_boxes, np.float32).reshape(-1, 4))
        ignored = (box_iou(detections, crowd).numpy() >= iou_threshold).any(axis=1)
    outcomes.extend((BACKGROUND, int(classes[d]), 0.0) for d in order if not det_taken[d] and not ignored[d])
    outcomes.extend((int(gt_classes[g]), BACKGROUND, 0.0) for g in np.flatnonzero(~gt_taken))
    true, predicted, ious = zip(*outcomes, strict=True) if outcomes else ((), (), ())
    return np.array(true, np.int64), np.array(predicted, np.int64), np.array(ious, np.float64)


def confusion_matrix(true: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """(K+1, K+1) int counts: rows true class, columns predicted class, background last in both."""
    true = np.where(np.asarray(true) == BACKGROUND, num_classes, true)
    predicted = np.where(np.asarray(predicted) == BACKGROUND, num_classes, predicted)
    size = num_classes + 1
    return np.bincount(true * size + predicted, minlength=size * size).reshape(size, size).astype(np.int64)


@dataclass
class ImageOutcome:
    """One val image: its detections above the threshold and how they matched the ground truth."""

    record: ImageRecord
    boxes: np.ndarray  # (D, 4) xyxy pixels, score-sorted
    classes: np.ndarray  # (D,) 0-based
    scores: np.ndarray  # (D,)
    true: np.ndarray  # outcomes, as returned by match_image
    predicted: np.ndarray
    ious: np.ndarray

    @property
    def missed(self) -> int:
        return int(((self.predicted == BACKGROUND) & (self.true != BACKGROUND)).sum())

    @property
    def false_positives(self) -> int:
        return int(((self.true == BACKGROUND) & (self.predicted != BACKGROUND)).sum())

    @property
    def wrong_class(self) -> int:
        return int(((self.true != self.predicted) & (self.true != BACKGROUND) & (self.predicted != BACKGROUND)).sum())

    @property
    def errors(self) -> int:
        """Off-diagonal outcomes: misses + false positives + wrong classes."""
        return int((self.true != self.predicted).sum())

    @property
    def mean_iou(self) -> float:
        """Mean IoU of the correct matches; 0 with none (the worst, for ranking)."""
        correct = (self.true == self.predicted) & (self.true != BACKGROUND)
        return float(self.ious[correct].mean()) if correct.any() else 0.0


def match_detections(
    dataset: DetectionSet,
    detections: list[dict],
    score_threshold: float = REPORT_SCORE_THRESHOLD,
    iou_threshold: float = MATCH_IOU_THRESHOLD,
) -> list[ImageOutcome]:
    """Match COCO-format `detections` (dataset category ids, xywh) to every record of `dataset`."""
    class_of = {int(c): k for k, c in enumerate(dataset.category_ids)}
    by_image: dict[int, list[dict]] = {}
    for d in detections:
        if d["score"] >= score_threshold:
            by_image.setdefault(int(d["image_id"]), []).append(d)
    outcomes = []
    for record in dataset.records:
        kept = sorted(by_image.get(int(record.image_id), []), key=lambda d: -d["score"])
        xywh = np.array([d["bbox"] for d in kept], np.float64).reshape(-1, 4)
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        classes = np.array([class_of[int(d["category_id"])] for d in kept], np.int64)
        scores = np.array([d["score"] for d in kept], np.float64)
        crowd = record.iscrowd
        true, predicted, ious = match_image(
            record.boxes[~crowd],
            record.labels[~crowd] - 1,
            boxes,
            classes,
            scores,
            iou_threshold,
            ignore_boxes=record.boxes[crowd],
        )
        outcomes.append(ImageOutcome(record, boxes, classes, scores, true, predicted, ious))
    return outcomes


def worst_first(outcomes: Sequence[ImageOutcome]) -> list[ImageOutcome]:
    """Most errors first; ties by the lowest mean IoU of the correct matches, then by image id."""
    return sorted(outcomes, key=lambda o: (-o.errors, o.mean_iou, o.record.image_id))


def save_figure(figure: Figure, out_png: Path) -> None:
    """Write a figure as PNG, creating its folder; an unwritable place is a one-line error."""
    out_png = Path(out_png)
    try:
        out_png.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(out_png, dpi=100)
    except OSError as error:
        raise MultiboxError(f"{out_png}: cannot write plot: {error.strerror or error}") from None


def _rgb(index: int) -> tuple[float, float, float]:
    """The class's colour in the gallery (labels 1..K), as matplotlib RGB."""
    return tuple(c / 255 for c in class_color(index + 1))  # type: ignore[return-value]


def plot_pr_curves(curves: dict[str, Any], out_png: Path, class_names: Sequence[str], max_legend: int = 20) -> None:
    """One panel per IoU of :func:`~multibox.metrics.coco.precision_recall_curves`: every class and the mean."""
    thresholds = list(curves["iou"])
    figure = Figure(figsize=(5.5 * len(thresholds), 4.6), layout="constrained")
    FigureCanvasAgg(figure)
    recall = curves["recall"]
    for index, threshold in enumerate(thresholds, start=1):
        entry = curves["iou"][threshold]
        axes = figure.add_subplot(1, len(thresholds), index)
        for k, name in enumerate(class_names):
            if name in entry["per_class"]:
                curve = entry["per_class"][name]
                label = f"{name} {curve['ap']:.3f}" if len(entry["per_class"]) <= max_legend else "_nolegend_"
                axes.plot(recall, curve["precision"], color=_rgb(k), linewidth=1.0, alpha=0.8, label=label)
        if entry["precision"]:
            axes.plot(recall, entry["precision"], color="black", linewidth=2.4, label=f"all classes {entry['ap']:.3f}")
        axes.set_title(f"precision-recall at IoU {threshold} (legend: AP)")
        axes.set_xlabel("recall")
        axes.set_ylabel("precision")
        axes.set_xlim(0.0, 1.0)
        axes.set_ylim(0.0, 1.05)
        axes.grid(True, alpha=0.3)
        if axes.get_legend_handles_labels()[0]:  # no curves (no boxes at all): no legend, and no matplotlib warning
            axes.legend(fontsize="small", loc="lower left")
    save_figure(figure, out_png)


def plot_confusion_matrix(
    matrix: np.ndarray, class_names: Sequence[str], out_png: Path, score_threshold: float
) -> None:
    """Counts and the row-normalised matrix side by side (rows: true class, columns: predicted)."""
    names = [*class_names, "background"]
    side = min(16.0, max(4.5, 0.42 * len(names) + 2.5))  # inches per panel; 80 COCO classes fill 16
    tick_size = 10 if len(names) <= 25 else max(4.0, 10 * 25 / len(names))
    figure = Figure(figsize=(2 * side, side), layout="constrained")
    FigureCanvasAgg(figure)
    rows = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, rows, out=np.zeros(matrix.shape, np.float64), where=rows > 0)
    panels = ((matrix, "counts", "d"), (normalised, "share of each true class (row)", ".2f"))
    figure.suptitle(
        f"confusion matrix: detections with score >= {score_threshold:g}, matched at IoU >= {MATCH_IOU_THRESHOLD:g}"
    )
    for index, (values, title, fmt) in enumerate(panels, start=1):
        axes = figure.add_subplot(1, 2, index)
        image = axes.imshow(values, cmap="Blues", vmin=0)
        figure.colorbar(image, ax=axes, shrink=0.8)
        axes.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=tick_size)
        axes.set_yticks(range(len(names)), names, fontsize=tick_size)
        axes.set_xlabel("predicted")
        axes.set_ylabel("true")
        axes.set_title(title)
        if len(names) <= 25:
            limit = values.max() / 2 if values.size else 0
            for (r, c), value in np.ndenumerate(values):
                if value:
                    axes.text(
                        c,
                        r,
                        format(value, fmt),
                        ha="center",
                        va="center",
                        fontsize="small",
                        color="white" if value > limit else "black",
                    )
    save_figure(figure, out_png)


def _fit(image: np.ndarray, boxes: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Image scaled so its longer side is `side` pixels (up or down), boxes scaled with it."""
    height, width = image.shape[:2]
    scale = side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    return resized, np.asarray(boxes, np.float64).reshape(-1, 4) * scale


def _caption(width: int, text: str) -> np.ndarray:
    """A white strip with one line of black text."""
    strip = np.full((22, width, 3), 255, np.uint8)
    cv2.putText(strip, text, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return strip


def gallery_image(
    outcome: ImageOutcome, class_names: Sequence[str], title: str, side: int = GALLERY_SIDE
) -> np.ndarray:
    """Predictions (left) beside the ground truth (right) of one image, with a caption above each."""
    record = outcome.record
    image = read_image(record.file, (record.height, record.width))
    resized, boxes = _fit(image, outcome.boxes, side)
    prediction = draw_detections(
        resized, boxes, [class_names[c] for c in outcome.classes], outcome.scores, color_key=outcome.classes + 1
    )
    _, gt_boxes = _fit(image, record.boxes, side)
    truth = draw_detections(
        resized,
        gt_boxes,
        [
            class_names[c - 1] + (" (crowd)" if crowd else "")
            for c, crowd in zip(record.labels, record.iscrowd, strict=True)
        ],
        color_key=record.labels,
    )
    gap = np.full((resized.shape[0], 6, 3), 255, np.uint8)
    pair = np.concatenate([prediction, gap, truth], axis=1)
    captions = np.concatenate(
        [_caption(prediction.shape[1], "predictions"), _caption(6, ""), _caption(truth.shape[1], "ground truth")],
        axis=1,
    )
    return np.concatenate([_caption(pair.shape[1], title), captions, pair], axis=0)


def write_gallery(
    outcomes: Sequence[ImageOutcome],
    class_names: Sequence[str],
    folder: Path,
    count: int = 16,
) -> list[dict[str, Any]]:
    """The `count` worst images as ``folder/NN_<image name>.jpg``; returns one entry per image written.

    Earlier gallery images in `folder` are removed first, so a rerun never mixes two rankings.
    An image that cannot be read any more is skipped with a warning.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("[0-9][0-9]_*.jpg"):
        stale.unlink()
    entries: list[dict[str, Any]] = []
    for outcome in worst_first(outcomes)[:count]:
        rank = len(entries) + 1
        record = outcome.record
        title = (
            f"#{rank} {record.file.name}: {outcome.missed} missed, {outcome.false_positives} false, "
            f"{outcome.wrong_class} wrong class"
        )
        try:
            picture = gallery_image(outcome, class_names, title)
        except MultiboxError as error:
            log.warning("gallery: skipped %s", error)
            continue
        name = f"{rank:02d}_{re.sub(r'[^A-Za-z0-9._-]', '_', record.file.stem)[:60]}.jpg"
        save_image(folder / name, picture)
        entries.append(
            {
                "rank": rank,
                "image": f"{folder.name}/{name}",
                "file": str(record.file),
                "image_id": int(record.image_id),
                "errors": outcome.errors,
                "missed": outcome.missed,
                "false_positives": outcome.false_positives,
                "wrong_class": outcome.wrong_class,
                "mean_iou": round(outcome.mean_iou, 4),
            }
        )
    return entries
