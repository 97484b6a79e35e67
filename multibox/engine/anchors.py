"""``anchors.auto``: default boxes fitted to the training set before a run, and the coverage table it prints."""

from __future__ import annotations

import logging
from typing import Any

from multibox.boxes.anchor_fit import AnchorFit, fit_anchors, fitted_config
from multibox.config import Config
from multibox.data.records import DetectionSet
from multibox.models.detector import model_geometry

log = logging.getLogger(__name__)


def print_fit(fit: AnchorFit, console: Any = None) -> None:
    """Rich table: per COCO size bucket, gt boxes and coverage before/after; default boxes before/after."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    height, width = fit.input_size
    table = Table(title=f"default-box coverage (best IoU >= {fit.iou_threshold:g}) at input {height}x{width}")
    for column in ("bucket (COCO area, original px)", "gt boxes", "coverage before", "after"):
        table.add_column(column, justify="left" if column.startswith("bucket") else "right")
    pct = lambda v: "-" if v != v else f"{v:.1%}"  # noqa: E731  (NaN: empty bucket)
    for name, row in fit.buckets.items():
        table.add_row(name, str(row["boxes"]), pct(row["before"]), pct(row["after"]))
    table.add_row("default boxes", "", f"{fit.boxes_before:,}", f"{fit.boxes_after:,}")
    console.print(table)
    if fit.box_sizes is not None and fit.aspect_ratios is not None:  # fit.changed
        console.print(f"anchors.box_sizes={flow(fit.box_sizes)} anchors.aspect_ratios={flow(fit.aspect_ratios)}")
    else:
        console.print(
            "no layout within the box budget covered more boxes than the current one: anchors kept as they are"
        )


def flow(levels: list[list[float]]) -> str:
    """[[12.5,20.0],[40.0]]: YAML flow style without spaces, usable as a KEY=VALUE override."""
    return "[" + ",".join("[" + ",".join(f"{v:g}" for v in level) + "]" for level in levels) + "]"


def auto_fit_anchors(config: Config, dataset: DetectionSet, console: Any = None, show: bool = True) -> Config:
    """``anchors.auto``: fit to the training set, show (`show`: DDP rank 0 only) and log the coverage,
    return the config to train with. Every rank fits, with the same seed, so all train the same boxes."""
    fit = fit_anchors(config, dataset, model_geometry(config), seed=config.train.seed)
    if show:
        print_fit(fit, console)
    overall = fit.buckets["all"]
    log.info(
        "anchors.auto: coverage %.4f -> %.4f, default boxes %d -> %d, box_sizes %s, aspect_ratios %s",
        overall["before"],
        overall["after"],
        fit.boxes_before,
        fit.boxes_after,
        fit.box_sizes,
        fit.aspect_ratios,
    )
    return fitted_config(config, fit)
