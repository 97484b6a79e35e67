"""Metrics JSON is written atomically; training curves plot whatever a CSVLogger log holds."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from multibox.errors import MultiboxError
from multibox.reporting import report
from multibox.reporting.report import plot_training_curves, save_metrics_json

# Sparse like Lightning's CSVLogger: step rows carry train terms and lr, epoch-end rows carry val.
METRICS_CSV = """\
epoch,lr-SGD,step,train/loss,train/loss_bbox,train/loss_cls,val/loss,val/map,val/map_50
0,0.0001,9,3.2,1.1,2.1,,,
0,0.001,19,2.9,1.0,1.9,,,
0,,19,,,,2.8,0.05,0.12
1,0.002,29,2.5,0.9,1.6,,,
1,0.002,39,2.2,0.8,1.4,,,
1,,39,,,,2.3,0.11,0.25
"""


def write_csv(folder: Path, text: str) -> Path:
    path = folder / "metrics.csv"
    path.write_text(text, encoding="utf-8")
    return path


def is_png_with_content(path: Path) -> bool:
    pixels = imread(path)
    return pixels.ndim == 3 and pixels.shape[0] > 100 and float(np.std(pixels)) > 0.0


def test_save_metrics_json_round_trip(tmp_path: Path) -> None:
    metrics = {"map": np.float64(0.25), "map_50": 0.5, "per_class": {"dog": np.float32(0.125)}, "bad": float("nan")}
    target = tmp_path / "sub" / "metrics.json"
    save_metrics_json(metrics, target)
    assert json.loads(target.read_text()) == {"map": 0.25, "map_50": 0.5, "per_class": {"dog": 0.125}, "bad": None}
    assert [p.name for p in target.parent.iterdir()] == ["metrics.json"]  # no temp file left


def test_save_metrics_json_replaces_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "metrics.json"
    save_metrics_json({"map": 0.1}, target)

    def fail(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(MultiboxError, match="metrics.json: cannot write metrics: No space left on device"):
        save_metrics_json({"map": 0.2}, target)
    assert json.loads(target.read_text()) == {"map": 0.1}  # old file intact
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # temp file cleaned up


def test_plot_training_curves(tmp_path: Path) -> None:
    out = tmp_path / "plots" / "curves.png"
    plot_training_curves(write_csv(tmp_path, METRICS_CSV), out)
    assert is_png_with_content(out)
    assert imread(out).shape[1] > imread(out).shape[0] * 2  # three panels side by side


def test_plot_tolerates_missing_columns(tmp_path: Path) -> None:
    only_loss = "epoch,train/loss\n0,3.0\n1,2.0\n"
    out = tmp_path / "loss.png"
    plot_training_curves(write_csv(tmp_path, only_loss), out)
    assert is_png_with_content(out)


def test_plot_without_anything_to_plot(tmp_path: Path) -> None:
    out = tmp_path / "empty.png"
    plot_training_curves(write_csv(tmp_path, "epoch,step\n"), out)
    assert is_png_with_content(out)


def test_plot_missing_csv_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(MultiboxError, match="metrics.csv: cannot read training log"):
        plot_training_curves(tmp_path / "metrics.csv", tmp_path / "out.png")


def test_series_skips_empty_cells() -> None:
    rows = {"step": [1.0, 2.0, 2.0], "val/map": [math.nan, math.nan, 0.3]}
    assert report._series(rows, "step", "val/map") == ([2.0], [0.3])


def test_results_png_shows_every_loss_term_learning_rate_and_map() -> None:
    header = [
        "epoch",
        "step",
        "lr-SGD",
        "lr-SGD/pg1",
        "train/loss",
        "train/loss_bbox",
        "train/loss_cls",
        "val/loss",
        "val/loss_bbox",
        "val/loss_cls",
        "val/map",
        "val/map_50",
        "val/map_75",
        "val/map_small",
        "val/mar_100",
    ]
    columns = {name: [0.0, 1.0] for name in header}
    panels = {kind: [name for name, _ in lines] for _, _, lines, kind in report.training_panels(columns)}
    assert panels == {
        "loss": ["train/loss", "train/loss_bbox", "train/loss_cls", "val/loss", "val/loss_bbox", "val/loss_cls"],
        "lr": ["lr-SGD", "lr-SGD/pg1"],
        "map": ["val/map", "val/map_50", "val/map_75"],
    }
    del columns["val/map"], columns["val/map_50"], columns["val/map_75"]
    assert [kind for *_, kind in report.training_panels(columns)] == ["loss", "lr"]  # no empty panel
