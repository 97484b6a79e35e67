"""Runs already on disk, side by side: each run folder's metrics.json, config.yaml and metrics.csv.

The answer to "which run was better and what did I change", with no tracking server: the key metrics
of every run and only the config keys whose values differ between them. Prints nothing.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from multibox.errors import MultiboxError
from multibox.outputs import atomic_write

KEY_METRICS = ("map", "map_50", "map_75", "map_small", "mar_100", "train_seconds")
IGNORED_KEYS = ("train.output_dir",)  # differs between any two runs: it is the run's name


@dataclass
class RunRecord:
    """One run folder: its final metrics (empty before or without an evaluation) and its flattened config."""

    name: str
    folder: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"optimizer": {"lr": 0.01}} -> {"optimizer.lr": 0.01}; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def find_runs(folder: Path) -> list[RunRecord]:
    """Every subfolder of `folder` holding a config.yaml (a run's first file), by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MultiboxError(f"{folder}: no such folder of runs")
    runs = [
        RunRecord(sub.name, sub, _read_json(sub / "metrics.json"), flatten(_read_yaml(sub / "config.yaml")))
        for sub in sorted(p for p in folder.iterdir() if p.is_dir() and (p / "config.yaml").is_file())
    ]
    if not runs:
        raise MultiboxError(f"{folder}: holds no runs (subfolders with a config.yaml, as train.output_dir writes)")
    return runs


def differing_keys(runs: list[RunRecord]) -> list[str]:
    """Config keys whose values are not the same in every run (a key missing from a run counts as different)."""
    keys = list(dict.fromkeys(k for run in runs for k in run.config))
    missing = object()
    return [
        k
        for k in keys
        if k not in IGNORED_KEYS
        and len({json.dumps(run.config.get(k, missing), default=str, sort_keys=True) for run in runs}) > 1
    ]


def val_map_curve(metrics_csv: Path) -> tuple[list[float], list[float]]:
    """(epoch, val mAP) points of a run's metrics.csv (CSVLogger writes val/map on the validation rows)."""
    if not metrics_csv.is_file():
        return [], []
    with metrics_csv.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    points: dict[float, float] = {}
    for row in rows:
        try:
            epoch, value = float(row.get("epoch") or "nan"), float(row.get("val/map") or "nan")
        except ValueError:
            continue
        if not (math.isnan(epoch) or math.isnan(value)):
            points[epoch + 1] = value  # epochs done, as the x axis reads
    epochs = sorted(points)
    return epochs, [points[e] for e in epochs]


def plot_val_map(runs: list[RunRecord], path: Path) -> int:
    """Overlay the runs' val mAP curves in one PNG; returns how many runs had a curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5))
    drawn = 0
    for run in runs:
        epochs, values = val_map_curve(run.folder / "metrics.csv")
        if epochs:
            axes.plot(epochs, values, marker="o", markersize=3, label=run.name)
            drawn += 1
    axes.set_xlabel("epoch")
    axes.set_ylabel("val mAP@[.5:.95]")
    axes.set_title("val mAP per epoch")
    axes.grid(alpha=0.3)
    if drawn:
        axes.legend(fontsize="small", loc="best")
    try:
        atomic_write(path, lambda file: figure.savefig(file, format="png", dpi=110, bbox_inches="tight"))
    finally:
        plt.close(figure)
    return drawn
