"""A training set without a single box: an error naming the annotation file, or a warning when val has boxes."""

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pytest

from multibox.config import load_config
from multibox.data.datamodule import DetectionDataModule
from multibox.errors import MultiboxError
from multibox.reporting.plots import plot_pr_curves
from multibox.reporting.report import plot_training_curves


def _coco(folder: Path, boxes: bool) -> Path:
    (folder / "images").mkdir(parents=True)
    images = [{"id": i, "file_name": f"{i}.jpg", "width": 64, "height": 48} for i in (1, 2)]
    annotations = (
        [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [4, 4, 20, 20], "area": 400, "iscrowd": 0}] if boxes else []
    )
    path = folder / "annotations.json"
    path.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 7, "name": "box"}]})
    )
    return path


def _config(tmp_path: Path, val_boxes: bool | None):
    train = _coco(tmp_path / "train", boxes=False)
    overrides = [f"data.train.images={tmp_path / 'train' / 'images'}", f"data.train.annotations={train}"]
    if val_boxes is not None:
        val = _coco(tmp_path / "val", boxes=val_boxes)
        overrides += [f"data.val.images={tmp_path / 'val' / 'images'}", f"data.val.annotations={val}"]
    return load_config(None, overrides), train


@pytest.mark.parametrize("val_boxes", [None, False])
def test_no_boxes_anywhere_is_an_error_naming_the_file(tmp_path, val_boxes) -> None:
    config, train = _config(tmp_path, val_boxes)
    with pytest.raises(MultiboxError, match=f"{train}: the training set's 2 images have no boxes at all"):
        DetectionDataModule(config)


def test_no_training_boxes_with_a_val_set_that_has_some_is_a_warning(tmp_path, caplog) -> None:
    config, train = _config(tmp_path, val_boxes=True)
    with caplog.at_level(logging.WARNING, logger="multibox.data.datamodule"):
        DetectionDataModule(config)
    assert f"{train}: the training set's 2 images have no boxes at all" in caplog.text


def test_plots_without_any_curve_raise_no_matplotlib_warning(tmp_path) -> None:
    """Legends of empty panels made matplotlib warn "No artists with labels found to put in legend"."""
    curves = {"recall": np.linspace(0, 1, 11).tolist(), "iou": {0.5: {"per_class": {}, "precision": [], "ap": -1.0}}}
    (tmp_path / "metrics.csv").write_text("epoch,step,train/loss\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plot_pr_curves(curves, tmp_path / "pr.png", [])
        plot_training_curves(tmp_path / "metrics.csv", tmp_path / "results.png")
    assert (tmp_path / "pr.png").is_file()
