"""``multibox data stats``: a config's split described (sizes, classes, default-box coverage), saved as PNG and
JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from multibox.boxes.coverage import anchor_coverage
from multibox.data.stats import dataset_stats, public
from multibox.errors import MultiboxError
from multibox.reporting.data_stats import plot_stats, print_stats


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
