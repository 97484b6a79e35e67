"""Dataset statistics, and how well a config's default boxes cover the ground truth.

Everything comes from the annotations (no image is read). :func:`dataset_stats` and
:func:`anchor_coverage` return plain dicts (JSON-able); :func:`print_stats` and
:func:`plot_stats` present them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike
from torchvision.ops import box_convert, box_iou

from multibox.data.records import DetectionSet
from multibox.errors import MultiboxError

PERCENTILES = (0, 5, 25, 50, 75, 95, 100)
SMALL, LARGE = 32**2, 96**2  # COCO size buckets, box area in original pixels
IOU_CHUNK = 2048  # ground-truth boxes per box_iou call (chunk x defaults floats)


def describe(values: ArrayLike) -> dict[str, float | int]:
    """count, mean and the PERCENTILES (p0 = min, p100 = max) of `values`; NaN when empty."""
    values = np.asarray(values, np.float64).reshape(-1)
    out: dict[str, float | int] = {
        "count": int(values.size),
        "mean": float(values.mean()) if values.size else float("nan"),
    }
    qs = np.percentile(values, PERCENTILES) if values.size else [float("nan")] * len(PERCENTILES)
    out.update({f"p{p}": float(q) for p, q in zip(PERCENTILES, qs, strict=True)})
    return out


def _box_columns(dataset: DetectionSet) -> dict[str, np.ndarray]:
    """All non-crowd boxes as flat columns: xyxy, label, image index, image width/height."""
    records = dataset.records
    counts = np.array([int((~r.iscrowd).sum()) for r in records], np.int64)
    keep = [~r.iscrowd for r in records]
    boxes = np.concatenate(
        [r.boxes[k] for r, k in zip(records, keep, strict=True)] or [np.zeros((0, 4), np.float32)]
    ).reshape(-1, 4)
    labels = np.concatenate(
        [r.labels[k] for r, k in zip(records, keep, strict=True)] or [np.zeros(0, np.int64)]
    ).astype(np.int64)
    image_index = np.repeat(np.arange(len(records)), counts)
    widths = np.array([r.width for r in records], np.float64)[image_index]
    heights = np.array([r.height for r in records], np.float64)[image_index]
    return {
        "boxes": boxes.astype(np.float64),
        "labels": labels,
        "image_index": image_index,
        "counts": counts,
        "widths": widths,
        "heights": heights,
    }


def normalised_boxes(dataset: DetectionSet) -> tuple[torch.Tensor, np.ndarray]:
    """Non-crowd boxes as (G, 4) xyxy fractions of their image (as resized to any input: IoU is unchanged
    by the per-axis resize), and their areas in original pixels (for the COCO size buckets)."""
    cols = _box_columns(dataset)
    boxes = cols["boxes"]
    scale = np.stack([cols["widths"], cols["heights"], cols["widths"], cols["heights"]], axis=1)
    gt = (
        torch.from_numpy(np.clip(boxes / np.maximum(scale, 1e-9), 0.0, 1.0))
        if len(boxes)
        else torch.zeros(0, 4, dtype=torch.float64)
    )
    return gt, (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def dataset_stats(dataset: DetectionSet) -> dict[str, Any]:
    """Images, boxes per class and per image, box size (sqrt area: pixels and relative to the image)
    and aspect ratio (w / h) distributions, overall and per class. Crowd boxes are counted apart."""
    cols = _box_columns(dataset)
    boxes = cols["boxes"]
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    size = np.sqrt(np.clip(w * h, 0, None))
    relative = size / np.sqrt(cols["widths"] * cols["heights"])
    aspect = w / np.where(h > 0, h, np.nan)
    per_class = {}
    for label, name in enumerate(dataset.class_names, start=1):
        mask = cols["labels"] == label
        per_class[name] = {
            "boxes": int(mask.sum()),
            "size_px": describe(size[mask]),
            "size_relative": describe(relative[mask]),
            "aspect_ratio": describe(aspect[mask]),
        }
    area = w * h
    return {
        "images": len(dataset),
        "images_without_boxes": int((cols["counts"] == 0).sum()),
        "boxes": int(len(boxes)),
        "crowd_boxes": int(sum(int(r.iscrowd.sum()) for r in dataset.records)),
        "classes": list(dataset.class_names),
        "boxes_per_class": {name: per_class[name]["boxes"] for name in dataset.class_names},
        "boxes_per_image": describe(cols["counts"]),
        "image_width": describe([r.width for r in dataset.records]),
        "image_height": describe([r.height for r in dataset.records]),
        "size_px": describe(size),
        "size_relative": describe(relative),
        "aspect_ratio": describe(aspect),
        "size_buckets": {
            "small": int((area < SMALL).sum()),
            "medium": int(((area >= SMALL) & (area < LARGE)).sum()),
            "large": int((area >= LARGE).sum()),
        },
        "per_class": per_class,
        "_raw": {"size_px": size, "aspect_ratio": aspect, "labels": cols["labels"], "boxes_per_image": cols["counts"]},
    }


def best_default_box_ious(gt_xyxy: torch.Tensor, default_cxcywh: torch.Tensor, chunk: int = IOU_CHUNK) -> torch.Tensor:
    """Best IoU of each (normalised xyxy) gt box with any default box, box_iou on chunks of gt boxes."""
    defaults = box_convert(default_cxcywh.float(), "cxcywh", "xyxy")
    out = torch.zeros(len(gt_xyxy))
    for start in range(0, len(gt_xyxy), chunk):
        out[start : start + chunk] = box_iou(gt_xyxy[start : start + chunk].float(), defaults).max(dim=1).values
    return out


def positives_per_object(
    gt_xyxy: torch.Tensor,
    image_index: torch.Tensor,
    num_images: int,
    default_cxcywh: torch.Tensor,
    iou_threshold: float,
    budget: int = 2**24,
) -> torch.Tensor:
    """Default boxes the training matcher (:func:`multibox.boxes.matching.match`) assigns to each gt box.

    Images are padded into (N, G, 4) batches sized to keep N x G x A IoUs under `budget`."""
    from multibox.boxes.matching import match

    counts = torch.bincount(image_index, minlength=num_images)
    positives = torch.zeros(len(gt_xyxy), dtype=torch.int64)
    if not len(gt_xyxy):
        return positives
    order = torch.argsort(image_index, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    anchors = len(default_cxcywh)
    images = torch.nonzero(counts).flatten().tolist()
    i = 0
    while i < len(images):
        g = int(counts[images[i]])
        n = 1
        while i + n < len(images) and (n + 1) * max(g, int(counts[images[i + n]])) * anchors <= budget:
            g = max(g, int(counts[images[i + n]]))
            n += 1
        chunk = images[i : i + n]
        boxes = torch.zeros(n, g, 4)
        labels = torch.zeros(n, g, dtype=torch.int64)
        for row, image in enumerate(chunk):
            idx = order[starts[image] : starts[image] + counts[image]]
            boxes[row, : len(idx)] = gt_xyxy[idx].float()
            labels[row, : len(idx)] = 1
        matched = match(boxes, labels, default_cxcywh.float(), iou_threshold)  # (n, A): gt index or -1
        rows = torch.arange(n).unsqueeze(1).expand_as(matched)
        flat = (rows * g + matched)[matched >= 0]
        hits = torch.bincount(flat, minlength=n * g).reshape(n, g)
        for row, image in enumerate(chunk):
            idx = order[starts[image] : starts[image] + counts[image]]
            positives[idx] = hits[row, : len(idx)]
        i += n
    return positives


def anchor_coverage(dataset: DetectionSet, default_cxcywh: torch.Tensor, iou_threshold: float = 0.5) -> dict[str, Any]:
    """How well default boxes (A, 4 normalised cxcywh of the input) cover the dataset's non-crowd boxes.

    Each gt box is resized with its image to the input, i.e. normalised by the image size (IoU does not
    change under the per-axis scaling of the resize). ``covered``: share with best IoU >= 0.5, overall
    and per COCO size bucket (box area in original pixels); ``positives_per_object``: default boxes
    matched to each gt box at `iou_threshold` by the training matcher (at least 1: the forced match).
    """
    cols = _box_columns(dataset)
    scale = np.stack([cols["widths"], cols["heights"], cols["widths"], cols["heights"]], axis=1)
    gt = (
        torch.from_numpy(np.clip(cols["boxes"] / np.maximum(scale, 1e-9), 0.0, 1.0)).float()
        if len(scale)
        else torch.zeros(0, 4)
    )
    best = best_default_box_ious(gt, default_cxcywh)
    positives = positives_per_object(
        gt, torch.from_numpy(cols["image_index"]), len(dataset), default_cxcywh, iou_threshold
    )
    boxes = cols["boxes"]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    buckets = {"small": area < SMALL, "medium": (area >= SMALL) & (area < LARGE), "large": area >= LARGE}
    best_np, pos_np = best.numpy().astype(np.float64), positives.numpy()

    def summary(mask: np.ndarray) -> dict[str, Any]:
        count = int(mask.sum())
        nan = float("nan")
        return {
            "boxes": count,
            "covered": float((best_np[mask] >= 0.5).mean()) if count else nan,
            "mean_best_iou": float(best_np[mask].mean()) if count else nan,
            "covered_at_threshold": float((best_np[mask] >= iou_threshold).mean()) if count else nan,
            "mean_positives": float(pos_np[mask].mean()) if count else nan,
        }

    overall = summary(np.ones(len(best_np), bool))
    return {
        "default_boxes": int(len(default_cxcywh)),
        "iou_threshold": float(iou_threshold),
        **overall,
        "uncovered": int((best_np < 0.5).sum()),
        "best_iou": describe(best_np),
        "positives_per_object": describe(pos_np),
        "only_forced_match": int((best_np < iou_threshold).sum()),
        "size_buckets": {name: summary(mask) for name, mask in buckets.items()},
        "per_class": {
            name: summary(cols["labels"] == label) for label, name in enumerate(dataset.class_names, start=1)
        },
        "_raw": {"best_iou": best_np, "positives": pos_np},
    }


def config_stats(config: Any, split: str = "train") -> dict[str, Any]:
    """Stats of a config's split plus the coverage of the default boxes of its detector (no weights read)."""
    from multibox.data.datamodule import load_split
    from multibox.models.detector import build_detector

    paths = getattr(config.data, split)
    if paths is None:
        raise MultiboxError(f"config: data.{split} is not set")
    dataset = load_split(paths, split, config.data.format, config.data)
    if not len(dataset):
        raise MultiboxError(f"{paths.annotations}: the {split} set has no images")
    stats = dataset_stats(dataset)
    detector, spec = build_detector(config, dataset.num_classes, load_weights=False)
    stats["coverage"] = anchor_coverage(dataset, detector.default_boxes.detach().cpu(), config.loss.iou_threshold)
    stats["coverage"]["input_size"] = list(config.data.input_size)
    stats["coverage"]["model"] = config.model.name
    stats["split"] = split
    stats["annotations"] = str(paths.annotations)
    return stats


def public(stats: dict[str, Any]) -> dict[str, Any]:
    """`stats` without the raw arrays (keys starting with '_'), JSON-able."""
    if isinstance(stats, dict):
        return {k: public(v) for k, v in stats.items() if not str(k).startswith("_")}
    if isinstance(stats, float) and not np.isfinite(stats):
        return None  # strict JSON: an empty bucket's mean is null
    return stats


def unused_stem(folder: Path, stem: str, suffixes: tuple[str, ...]) -> str:
    """stem, or stem_1, stem_2 ...: the first for which no folder/stem+suffix exists (never overwrite)."""
    name, n = stem, 0
    while any((folder / f"{name}{suffix}").exists() for suffix in suffixes):
        n += 1
        name = f"{stem}_{n}"
    return name


def save_stats(stats: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """Write stats.png and stats.json into out_dir (stats_1.* ... when taken); returns both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = unused_stem(out_dir, "stats", (".png", ".json"))
    png, json_path = out_dir / f"{stem}.png", out_dir / f"{stem}.json"
    plot_stats(stats, png)
    json_path.write_text(json.dumps(public(stats), indent=2), encoding="utf-8")
    return png, json_path


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


def stats_command(
    config_path: Path, overrides: list[str], split: str = "train", out: Path | None = None
) -> dict[str, Any]:
    """`multibox data stats`: print the tables, write stats.png and stats.json (never overwriting); return the stats."""
    from rich.console import Console

    from multibox.config import load_config

    config = load_config(config_path, overrides)
    out_dir = Path(out) if out is not None else Path(config.train.output_dir) / "data_stats"
    stats = config_stats(config, split)
    console = Console()
    print_stats(stats, console)
    png, json_path = save_stats(stats, out_dir)
    console.print(f"wrote {png} and {json_path}")
    return stats


def input_size_for(dataset: DetectionSet, short_side: int, multiple: int = 16) -> tuple[int, int]:
    """[H, W] with the given shorter side and the training images' median aspect ratio (`data.input_short_side`).

    The median, not the mean: a few odd frames (a panorama among phone photos) should not stretch every image.
    The longer side is rounded to a multiple of 16, so feature maps of stride 8 and 16 divide it evenly.
    """
    if not len(dataset):
        return short_side, short_side
    aspect = float(np.median([record.width / max(record.height, 1) for record in dataset.records]))  # W / H
    longer = max(short_side, int(round(short_side * max(aspect, 1 / aspect) / multiple)) * multiple)
    return (short_side, longer) if aspect >= 1 else (longer, short_side)
