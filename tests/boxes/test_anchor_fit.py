"""`multibox anchors fit` / anchors.auto: exact coverage, a gain on small objects, budget, fragment, CLI, train hook."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from multibox.boxes import anchor_fit
from multibox.boxes.anchor_fit import fit_anchors, fitted_config
from multibox.boxes.coverage import anchor_coverage, best_default_box_ious
from multibox.cli import main
from multibox.commands.anchors import write_fragment
from multibox.config import load_config
from multibox.data.formats.coco import load_coco
from multibox.data.records import DetectionSet, ImageRecord
from multibox.data.stats import normalised_boxes
from multibox.data.synth import make_synthetic_dataset
from multibox.demo import DEMO_CONFIG
from multibox.engine.anchors import auto_fit_anchors
from multibox.models.detector import build_detector, model_geometry

SIZE = (160, 256)  # (H, W): non-square


@pytest.fixture(scope="module")
def small_objects(tmp_path_factory) -> Path:
    """24 images of 256x160 with 1-8 shapes each, 0.04-0.1 of the shorter side (6-16 px)."""
    root = tmp_path_factory.mktemp("anchor_fit")
    make_synthetic_dataset(root / "train", 24, SIZE, seed=0, max_objects=8, object_sizes=(0.04, 0.1))
    return root


@pytest.fixture(scope="module")
def fitted(small_objects):
    """The demo config at 160x256 on the small-object set, and its fit (one search shared by several tests)."""
    config = load_config(DEMO_CONFIG, _overrides(small_objects))  # demo boxes: 16-72 px, too big for 6-16 px shapes
    return config, fit_anchors(config, _dataset(small_objects), model_geometry(config))


def _overrides(root: Path) -> list[str]:
    return [
        f"data.train.images={root / 'train' / 'images'}",
        f"data.train.annotations={root / 'train' / 'annotations.json'}",
        f"data.input_size=[{SIZE[0]},{SIZE[1]}]",
        f"train.output_dir={root / 'run'}",
    ]


def _dataset(root: Path) -> DetectionSet:
    return load_coco(root / "train" / "images", root / "train" / "annotations.json")


@pytest.mark.parametrize("extra", [[], ["anchors.steps=[10,20,40]", "anchors.aspect_ratios=[[2],[3],[]]"]])
def test_closed_form_best_iou_equals_box_iou_against_every_default_box(small_objects, extra):
    config = load_config(DEMO_CONFIG, _overrides(small_objects) + extra)
    gt, _ = normalised_boxes(_dataset(small_objects))
    layout, features = model_geometry(config)
    detector, _ = build_detector(config, 5, load_weights=False)
    reference = best_default_box_ious(gt, detector.default_boxes)  # box_iou with all 5,040 default boxes
    assert torch.allclose(anchor_fit.best_layout_ious(gt, layout, features, SIZE).float(), reference, atol=1e-5)


def test_fit_raises_small_object_coverage_within_the_box_budget(small_objects, fitted):
    config, fit = fitted
    overall = fit.buckets["all"]
    assert overall["before"] < 0.3 and overall["after"] >= 0.65  # measured: 24.5% -> 67.9% of 106 boxes
    assert fit.buckets["small"]["boxes"] == overall["boxes"] and fit.buckets["medium"]["boxes"] == 0
    assert fit.boxes_after <= fit.boxes_before == 5040
    # The fitted config builds, has exactly boxes_after default boxes, and the reference coverage agrees.
    detector, spec = build_detector(fitted_config(config, fit), 5, load_weights=False)
    assert spec.num_boxes == len(detector.default_boxes) == fit.boxes_after
    coverage = anchor_coverage(_dataset(small_objects), detector.default_boxes, config.loss.iou_threshold)
    assert coverage["covered"] == pytest.approx(overall["after"])


def test_a_smaller_budget_is_respected(small_objects):
    config = load_config(DEMO_CONFIG, _overrides(small_objects))
    fit = fit_anchors(config, _dataset(small_objects), model_geometry(config), budget=2000)
    assert fit.changed and fit.boxes_after <= 2000
    assert fit.buckets["all"]["after"] > fit.buckets["all"]["before"]


def test_a_layout_that_already_fits_every_box_exactly_is_kept():
    config = load_config(DEMO_CONFIG, [f"data.input_size=[{SIZE[0]},{SIZE[1]}]"])
    detector, _ = build_detector(config, 1, load_weights=False)
    h, w = SIZE
    picks = detector.default_boxes[torch.linspace(0, len(detector.default_boxes) - 1, 40).long()]
    xyxy = torch.cat((picks[:, :2] - picks[:, 2:] / 2, picks[:, :2] + picks[:, 2:] / 2), 1) * torch.tensor([w, h, w, h])
    record = ImageRecord(1, Path("/nowhere/0.jpg"), w, h, xyxy.numpy(), np.ones(40, np.int64), np.zeros(40, bool))
    fit = fit_anchors(config, DetectionSet([record], ["a"], [1]), model_geometry(config))
    assert not fit.changed and fit.buckets["all"]["before"] == fit.buckets["all"]["after"] == 1.0
    assert fitted_config(config, fit).anchors.box_sizes == config.anchors.box_sizes


def test_a_shared_head_gets_the_same_boxes_on_every_level(small_objects):
    config = load_config(None, _overrides(small_objects) + ["model.name=ssd_resnet50_fpn", "data.input_size=[128,192]"])
    fit = fit_anchors(config, _dataset(small_objects), model_geometry(config))
    assert fit.changed and fit.boxes_after <= fit.boxes_before
    per_location = {len(s) * (1 + 2 * len(r)) for s, r in zip(fit.box_sizes, fit.aspect_ratios, strict=True)}
    assert len(per_location) == 1


def test_fragment_loads_back_and_is_never_overwritten(small_objects, fitted, tmp_path):
    _, fit = fitted
    path = write_fragment(fit, tmp_path / "anchors.yaml", "demo.yaml")
    anchors = yaml.safe_load(path.read_text())["anchors"]
    assert anchors == {"box_sizes": fit.box_sizes, "aspect_ratios": fit.aspect_ratios}
    override = [
        line.split("#", 1)[1].strip() for line in path.read_text().splitlines() if "anchors.box_sizes=" in line
    ][0]
    merged = load_config(DEMO_CONFIG, _overrides(small_objects) + override.split())
    assert merged.anchors.box_sizes == fit.box_sizes
    _, spec = build_detector(merged, 5, load_weights=False)
    assert spec.num_boxes == fit.boxes_after
    with pytest.raises(Exception, match="already exists"):
        write_fragment(fit, path, "demo.yaml")


def test_cli_prints_the_table_writes_the_fragment_and_refuses_to_overwrite(small_objects, capsys):
    args = ["anchors", "fit", "-c", str(DEMO_CONFIG), *_overrides(small_objects)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "coverage before" in out and "small" in out and "default boxes" in out and "5,040" in out
    fragment = small_objects / "run" / "anchors.yaml"
    assert "box_sizes" in yaml.safe_load(fragment.read_text())["anchors"]
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err


def test_anchors_auto_replaces_the_anchors_and_logs_the_coverage(small_objects, fitted, caplog):
    config = load_config(DEMO_CONFIG, _overrides(small_objects) + ["anchors.auto=true"])
    with caplog.at_level(logging.INFO, logger="multibox.engine.anchors"):
        auto = auto_fit_anchors(config, _dataset(small_objects))
    assert auto.anchors.box_sizes == fitted[1].box_sizes != config.anchors.box_sizes  # the same search: deterministic
    assert auto.anchors.aspect_ratios == fitted[1].aspect_ratios and not auto.anchors.auto
    assert "coverage 0.2453 -> 0.6792" in caplog.text


def test_a_train_run_with_anchors_auto_trains_and_saves_the_fitted_anchors(small_objects, fitted, one_thread):
    from multibox.engine.train import train

    run = small_objects / "auto_run"
    config = load_config(
        DEMO_CONFIG,
        _overrides(small_objects)
        + [
            "anchors.auto=true",
            f"train.output_dir={run}",
            "train.epochs=1",
            "data.batch_size=8",
            "data.num_workers=0",
            "train.progress=false",
            "train.report=false",
            "train.accelerator=cpu",
        ],
    )
    train(config)
    saved = yaml.safe_load((run / "config.yaml").read_text())["anchors"]
    assert saved["box_sizes"] == fitted[1].box_sizes and saved["auto"] is False
