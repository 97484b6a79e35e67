"""Run reports: metrics as JSON, training curves as a PNG, and the evaluation report.

Figures are drawn on a bare matplotlib ``Figure`` with the Agg canvas, so they need
no display and leave pyplot's global state (and the user's backend) alone.
:func:`write_evaluation_report` writes, next to ``metrics.json``: ``pr_curves.png/.json``,
``confusion_matrix.png/.json``, ``gallery/`` + ``gallery.json`` (worst images first) and
``report.md`` / ``report.html`` tying them together (see :mod:`multibox.reporting.plots`).
"""

from __future__ import annotations

import csv
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from multibox.data.records import DetectionSet
from multibox.errors import MultiboxError
from multibox.metrics.coco import precision_recall_curves
from multibox.metrics.evaluation import Evaluation
from multibox.outputs import atomic_write
from multibox.reporting.page import evaluation_blocks, write_report_page
from multibox.reporting.plots import (
    MATCH_IOU_THRESHOLD,
    REPORT_SCORE_THRESHOLD,
    check_score_threshold,
    confusion_matrix,
    match_detections,
    plot_confusion_matrix,
    plot_pr_curves,
    save_figure,
    write_gallery,
)


def _jsonable(value: Any) -> Any:
    """Plain JSON values: numpy/torch scalars become floats/ints, NaN/inf become null."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def save_metrics_json(metrics: dict[str, Any], path: Path) -> None:
    """Write `metrics` as JSON atomically, so a reader never sees a half-written file."""
    save_json(metrics, path, "metrics")


def save_json(data: Any, path: Path, what: str = "data") -> None:
    """Write `data` as JSON atomically (temp file + rename); `what` names it in errors."""
    path = Path(path)
    text = json.dumps(_jsonable(data), indent=2, allow_nan=False) + "\n"
    try:
        atomic_write(path, lambda file: file.write(text.encode("utf-8")))
    except OSError as error:
        raise MultiboxError(f"{path}: cannot write {what}: {error.strerror or error}") from None


def _read_columns(metrics_csv: Path) -> dict[str, list[float]]:
    """CSV columns as float lists, NaN where a (sparse) row leaves a cell empty."""
    try:
        with open(metrics_csv, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as error:
        raise MultiboxError(f"{metrics_csv}: cannot read training log: {error.strerror or error}") from None
    columns: dict[str, list[float]] = {}
    for name in rows[0].keys() if rows else []:
        if name is None:
            continue
        values = []
        for row in rows:
            try:
                values.append(float(row.get(name) or "nan"))
            except ValueError:
                values.append(float("nan"))
        columns[name] = values
    return columns


def _series(columns: dict[str, list[float]], x_name: str, y_name: str) -> tuple[list[float], list[float]]:
    """The (x, y) points where both cells are filled."""
    xs = columns.get(x_name) or list(map(float, range(len(columns[y_name]))))
    pairs = [(x, y) for x, y in zip(xs, columns[y_name], strict=True) if not (math.isnan(x) or math.isnan(y))]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _is_lr(name: str) -> bool:
    """`lr`, LearningRateMonitor's `lr-SGD` / `lr-SGD/pg1`, or `train/lr`."""
    return name == "lr" or name.startswith(("lr-", "lr/", "lr_")) or name.endswith("/lr")


def _log_scale_if_wide(axes: Any) -> None:
    """Log y axis when values span more than two decades (e.g. a warmup from 0.001x)."""
    values = [y for line in axes.get_lines() for y in line.get_ydata()]
    if values and min(values) > 0 and max(values) / min(values) > 100:
        axes.set_yscale("log")


Panel = tuple[str, str, list[tuple[str, str]], str]  # title, x column, (y column, line style), kind


def training_panels(columns: dict[str, list[float]]) -> list[Panel]:
    """What results.png shows: every loss term (train and val), every learning rate, and val
    mAP, mAP@.5 and mAP@.75; a panel only when one of its columns has values."""
    step_x = "step" if "step" in columns else "epoch"
    epoch_x = "epoch" if "epoch" in columns else step_x
    losses = [n for n in columns if "loss" in n and not n.startswith("val")]
    val_losses = [n for n in columns if "loss" in n and n.startswith("val")]
    rates = [n for n in columns if _is_lr(n)]
    maps = [n for n in columns if n.startswith("val") and n.rsplit("/", 1)[-1] in ("map", "map_50", "map_75")]
    panels = [
        (f"loss per {step_x}", step_x, [(n, "-") for n in losses] + [(n, "o--") for n in val_losses], "loss"),
        (f"learning rate per {step_x}", step_x, [(n, "-") for n in rates], "lr"),
        (f"validation mAP per {epoch_x}", epoch_x, [(n, "o-") for n in maps], "map"),
    ]
    return [p for p in panels if any(_series(columns, p[1], name)[0] for name, _ in p[2])]


def plot_training_curves(metrics_csv: Path, out_png: Path) -> None:
    """Plot Lightning CSVLogger's metrics.csv: loss terms, learning rate, val mAP; save as PNG.

    Panels appear only for columns that exist; with nothing to plot the PNG says so,
    so a report never fails because a run was short.
    """
    columns = _read_columns(Path(metrics_csv))
    panels = training_panels(columns)
    figure = Figure(figsize=(6 * max(1, len(panels)), 4.2), layout="constrained")
    FigureCanvasAgg(figure)
    if not panels:
        figure.text(0.5, 0.5, f"no loss, lr or mAP values in {Path(metrics_csv).name}", ha="center", va="center")
    for index, (title, x_name, names, kind) in enumerate(panels, start=1):
        axes = figure.add_subplot(1, len(panels), index)
        for name, style in names:
            xs, ys = _series(columns, x_name, name)
            if xs:
                axes.plot(xs, ys, style, label=name, markersize=3, linewidth=1.2)
        axes.set_title(title)
        axes.set_xlabel(x_name)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(True, alpha=0.3)
        if axes.get_legend_handles_labels()[0]:  # no series: no legend, and no matplotlib warning
            axes.legend(fontsize="small")
        if kind == "lr":
            _log_scale_if_wide(axes)
        elif kind == "map":
            axes.set_ylim(0.0, 1.0)
    save_figure(figure, out_png)


def write_evaluation_report(
    out_dir: Path,
    evaluation: Evaluation,
    dataset: DetectionSet,
    score_threshold: float = REPORT_SCORE_THRESHOLD,
    gallery_size: int = 16,
    training_log: Path | None = None,
) -> Path:
    """Pictures and the report page of one evaluation of `dataset`'s images; returns the path of ``report.md``.

    Everything is drawn from `evaluation` (metrics, detections, the ground truth scored): images the loader
    could not read are left out here as they are of the metrics, not counted as misses.
    `training_log` (a CSVLogger ``metrics.csv``) adds ``results.png``;
    an existing ``results.png`` in `out_dir` is linked either way.
    """
    check_score_threshold(score_threshold)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics, detections = evaluation.metrics, evaluation.detections
    names = list(dataset.class_names)
    total = len(dataset)
    scored = evaluation.image_ids
    if len(scored) < total:
        dataset = dataset.subset([i for i, record in enumerate(dataset.records) if record.image_id in scored])
    curves = precision_recall_curves(dataset.to_coco_gt(), detections, names)
    save_json(curves, out / "pr_curves.json", "curves")
    plot_pr_curves(curves, out / "pr_curves.png", names)

    outcomes = match_detections(dataset, detections, score_threshold)
    true = np.concatenate([o.true for o in outcomes]) if outcomes else np.zeros(0, np.int64)
    predicted = np.concatenate([o.predicted for o in outcomes]) if outcomes else np.zeros(0, np.int64)
    matrix = confusion_matrix(true, predicted, len(names))
    save_json(
        {
            "classes": [*names, "background"],
            "rows": "true class",
            "columns": "predicted class",
            "score_threshold": score_threshold,
            "iou_threshold": MATCH_IOU_THRESHOLD,
            "counts": matrix.tolist(),
        },
        out / "confusion_matrix.json",
        "confusion matrix",
    )
    plot_confusion_matrix(matrix, names, out / "confusion_matrix.png", score_threshold)

    gallery = write_gallery(outcomes, names, out / "gallery", gallery_size)
    save_json(gallery, out / "gallery.json", "gallery")
    if training_log is not None and Path(training_log).is_file():
        plot_training_curves(Path(training_log), out / "results.png")
    crowd = sum(int(record.iscrowd.sum()) for record in dataset.records)  # crowd / VOC difficult: not scored
    boxes = f"{dataset.num_boxes - crowd} ground-truth boxes"
    boxes += f" (and {crowd} crowd/difficult, not scored)" if crowd else ""
    unread = f" ({total - len(dataset)} unreadable, left out as in metrics.json)" if total > len(dataset) else ""
    summary = (
        f"{len(dataset)} validation images{unread}, {boxes}, {len(detections)} detections; "
        f"written {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Numbers as in metrics.json."
    )
    blocks = evaluation_blocks(
        metrics,
        curves,
        matrix,
        names,
        gallery,
        score_threshold,
        "results.png" if (out / "results.png").is_file() else None,
        summary,
    )
    return write_report_page(out, "multibox evaluation report", blocks)
