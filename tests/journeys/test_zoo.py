"""The zoo models test_formats.py does not train: one training step, then `eval` at a non-square input size that
is neither the training size nor the model's default (issue 13, item 2: default boxes follow the config's size).

SSD300 and SSD512 (VGG16) take the same journey from their recipe configs in test_recipes.py.
"""

from __future__ import annotations

import json

import pytest

# model -> (training size, eval size): the VGG and ResNet-50 backbones need >= 268 px on a side.
SIZES = {
    "ssd_resnet50": ([300, 300], "[300,268]"),
}


@pytest.fixture(scope="session")
def zoo_data(journey_root, journey):
    """One tiny COCO dataset (written once) for every zoo model."""
    return journey.write_dataset(journey_root / "zoo", "coco", seed=5, train=2, val=2)


@pytest.mark.parametrize("model", sorted(SIZES))
def test_one_step_then_eval_at_another_size(model, zoo_data, journey_root, journey):
    train_size, eval_size = SIZES[model]
    config = journey.write_config(
        journey_root / "zoo",
        {**zoo_data, "input_size": train_size, "batch_size": 2},
        name=model,
        model={"name": model, "width_mult": 1.0},  # no width multiplier outside MobileNets
    )
    work = journey_root / "work"
    trained = journey.ok("train", "-c", config, f"train.output_dir=runs/zoo-{model}", cwd=work)
    assert "report:" not in trained.stdout and f"outputs in runs/zoo-{model}" in trained.stdout
    best = work / "runs" / f"zoo-{model}" / "checkpoints" / "best.ckpt"
    run = best.parents[1]  # train.report: false (the journeys' default): the metrics, no pictures
    assert (run / "metrics.json").is_file() and not (run / "report.md").exists() and not (run / "results.png").exists()
    journey.ok(
        "eval", "--weights", best, f"data.input_size={eval_size}", "-c", config, "--out", f"zoo-{model}.json", cwd=work
    )
    metrics = json.loads((work / f"zoo-{model}.json").read_text())
    assert 0.0 <= metrics["map_50"] <= 1.0 and metrics["per_class"]
