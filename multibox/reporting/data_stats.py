"""The dataset statistics of ``multibox data stats`` as a picture (histograms) and as a table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from multibox.data.stats import PERCENTILES


def plot_stats(stats: dict[str, Any], path: Path) -> None:
    """Histograms: box size (px) and aspect ratio per class, boxes per image, best IoU with a default box."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    raw = stats["_raw"]
    coverage = stats.get("coverage")
    panels = 4 if coverage is not None else 3
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4))
    size, aspect, labels = raw["size_px"], raw["aspect_ratio"], raw["labels"]
    finite = np.isfinite(aspect) & (aspect > 0)
    size_bins = np.geomspace(max(size.min(), 1.0), max(size.max(), 2.0), 30) if size.size else 10
    aspect_bins = (
        np.geomspace(aspect[finite].min(), max(aspect[finite].max(), aspect[finite].min() * 1.01), 30)
        if finite.any()
        else 10
    )
    for label, name in enumerate(stats["classes"], start=1):
        mask = labels == label
        if mask.any():
            axes[0].hist(size[mask], bins=size_bins, histtype="step", label=name)
            axes[1].hist(aspect[mask & finite], bins=aspect_bins, histtype="step", label=name)
    for ax, title in ((axes[0], "box size sqrt(area) [px]"), (axes[1], "aspect ratio w/h")):
        ax.set_xscale("log")
        ax.set_title(title)
        ax.set_ylabel("boxes")
        if len(stats["classes"]) <= 20:
            ax.legend(fontsize=7)
    per_image = raw["boxes_per_image"]
    axes[2].hist(per_image, bins=np.arange(0, (per_image.max() if per_image.size else 0) + 2) - 0.5)
    axes[2].set_title("boxes per image")
    axes[2].set_ylabel("images")
    if coverage is not None:
        axes[3].hist(coverage["_raw"]["best_iou"], bins=np.linspace(0, 1, 41))
        axes[3].axvline(0.5, color="red", linestyle="--")
        axes[3].set_title(f"best IoU with a default box (covered {coverage['covered']:.1%})")
        axes[3].set_ylabel("boxes")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def print_stats(stats: dict[str, Any], console: Any = None) -> None:
    """Rich tables: dataset summary, distributions with percentiles, per class, default-box coverage."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    console.print(
        f"{stats['images']} images ({stats['images_without_boxes']} without boxes), {stats['boxes']} boxes"
        f" ({stats['crowd_boxes']} crowd boxes not counted), {len(stats['classes'])} classes"
    )
    table = Table(title="distributions")
    table.add_column("quantity")
    for column in ("mean", *(f"p{p}" for p in PERCENTILES)):
        table.add_column(column, justify="right")
    for key, name in (
        ("boxes_per_image", "boxes per image"),
        ("size_px", "box size sqrt(area) px"),
        ("size_relative", "box size / image size"),
        ("aspect_ratio", "aspect ratio w/h"),
        ("image_width", "image width"),
        ("image_height", "image height"),
    ):
        d = stats[key]
        table.add_row(name, *(f"{d[k]:.3g}" for k in ("mean", *(f"p{p}" for p in PERCENTILES))))
    console.print(table)
    coverage = stats.get("coverage")
    table = Table(title="per class")
    for column in ("class", "boxes", "median size px", "median rel. size", "median aspect"):
        table.add_column(column, justify="right" if column != "class" else "left")
    if coverage is not None:
        table.add_column("covered (IoU>=0.5)", justify="right")
        table.add_column("mean best IoU", justify="right")
    for name, c in stats["per_class"].items():
        row = [
            name,
            str(c["boxes"]),
            f"{c['size_px']['p50']:.3g}",
            f"{c['size_relative']['p50']:.3g}",
            f"{c['aspect_ratio']['p50']:.3g}",
        ]
        if coverage is not None:
            k = coverage["per_class"][name]
            row += [f"{k['covered']:.1%}", f"{k['mean_best_iou']:.3f}"] if k["boxes"] else ["-", "-"]
        table.add_row(*row)
    console.print(table)
    if coverage is None:
        return
    table = Table(
        title=f"default-box coverage: {coverage['default_boxes']} default boxes ({coverage.get('model', '')} "
        f"at input {coverage.get('input_size', '')})"
    )
    for column in (
        "boxes",
        "count",
        "covered (IoU>=0.5)",
        "mean best IoU",
        f"positives / object (IoU>={coverage['iou_threshold']:g})",
    ):
        table.add_column(column, justify="right" if column != "boxes" else "left")
    rows = [("all", coverage)] + [(f"{n} (COCO)", coverage["size_buckets"][n]) for n in ("small", "medium", "large")]
    for name, k in rows:
        if not k["boxes"]:
            table.add_row(name, "0", "-", "-", "-")
            continue
        table.add_row(
            name, str(k["boxes"]), f"{k['covered']:.1%}", f"{k['mean_best_iou']:.3f}", f"{k['mean_positives']:.2f}"
        )
    console.print(table)
    console.print(
        f"{coverage['uncovered']} boxes have no default box with IoU >= 0.5; {coverage['only_forced_match']} "
        f"get only their forced best match at loss.iou_threshold={coverage['iou_threshold']:g}"
    )
