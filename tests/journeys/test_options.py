"""Every command that takes KEY=VALUE overrides, with options before and after them: the override is applied and
never taken as an option's value (issue 13, item 4). train and eval are walked in test_formats.py; `demo` in
tests/test_cli_overrides.py (a demo run takes minutes)."""

from __future__ import annotations

import json

import pytest
import yaml


@pytest.fixture(scope="session")
def options_config(journey_root, journey):
    data = journey.write_dataset(journey_root / "options", "coco", seed=7, train=3, val=2)
    return journey.write_config(journey_root / "options", data, name="options")


def test_config_show(options_config, journey_root, journey):
    done = journey.ok(
        "config", "show", "train.epochs=3", "-c", options_config, "data.input_size=[48,80]", cwd=journey_root / "work"
    )
    shown = yaml.safe_load(done.stdout)
    assert shown["train"]["epochs"] == 3 and shown["data"]["input_size"] == [48, 80]
    assert shown["data"]["train"]["images"] == str(journey_root / "options" / "coco" / "images" / "train")


def test_summary(options_config, journey_root, journey):
    done = journey.ok(
        "summary",
        "data.input_size=[48,80]",
        "-c",
        options_config,
        "--json",
        "data.batch_size=3",
        "--depth",
        "1",
        cwd=journey_root / "work",
    )
    summary = json.loads(done.stdout)
    assert summary["input_size"] == [48, 80] and summary["batch_size"] == 3


def test_data_validate_stats_and_anchors_fit(options_config, journey_root, journey):
    work = journey_root / "work"
    done = journey.ok(
        "data", "validate", "data.format=coco", "-c", options_config, "--workers", "1", "data.num_workers=0", cwd=work
    )
    assert "error" not in done.stderr.lower()
    journey.ok(
        "data",
        "stats",
        "data.input_size=[48,80]",
        "-c",
        options_config,
        "--split",
        "val",
        "data.batch_size=2",
        "--out",
        "opt-stats",
        cwd=work,
    )
    assert (work / "opt-stats" / "stats.json").is_file()
    journey.ok(
        "anchors",
        "fit",
        "-c",
        options_config,
        "data.input_size=[64,64]",
        "--out",
        "opt-anchors.yaml",
        "train.seed=2",
        cwd=work,
    )
    assert "anchors" in yaml.safe_load((work / "opt-anchors.yaml").read_text())
