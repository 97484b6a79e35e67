"""The CLI contract end to end on a tiny synthetic dataset: synth, train, eval, predict, errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from multibox.cli import main
from multibox.metrics.coco import METRIC_KEYS

TINY = [
    "model.name=ssdlite320_mobilenet_v3_large",
    "model.width_mult=0.5",
    "data.input_size=[96,96]",
    "data.batch_size=8",
    "data.num_workers=0",
    "train.epochs=1",
    "train.progress=false",
    "train.accelerator=cpu",
    "optimizer.name=adamw",
    "optimizer.lr=0.001",
    "eval.max_detections=50",
]


@pytest.fixture(scope="module")
def trained(tiny_run, tmp_path_factory) -> Path:
    """The shared tiny run (tests/conftest.py: 8 train, 5 val 64x64 images), its data and run/ linked into a
    folder of this module's own, where its outputs go."""
    root = tmp_path_factory.mktemp("cli")
    for name in ("train", "val", "run", "config.yaml"):
        (root / name).symlink_to(tiny_run / name)
    return root


def test_synth_writes_a_coco_dataset(tmp_path):
    assert main(["data", "synth", str(tmp_path / "d"), "--images", "3", "--size", "48x40", "--seed", "0"]) == 0
    coco = json.loads((tmp_path / "d/annotations.json").read_text())
    assert [(i["width"], i["height"]) for i in coco["images"]] == [(40, 48)] * 3
    assert len(list((tmp_path / "d/images").glob("*.jpg"))) == 3


def test_train_writes_every_promised_output(trained):
    run = trained / "run"
    for name in (
        "config.yaml",
        "checkpoints/last.ckpt",
        "checkpoints/best.ckpt",
        "metrics.csv",
        "metrics.json",
        "results.png",
    ):
        assert (run / name).is_file(), name
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(METRIC_KEYS) <= metrics.keys()
    assert set(metrics["per_class"]) <= {"circle", "square", "triangle", "cross", "star"}
    resolved = (run / "config.yaml").read_text()
    assert "num_classes: 5" in resolved and "scales:" in resolved


def test_eval_with_and_without_config_gives_the_same_metrics(trained, capsys):
    run = trained / "run"
    out_a, out_b = trained / "eval_a.json", trained / "eval_b.json"
    assert main(["eval", "--weights", str(run / "checkpoints/best.ckpt"), "--out", str(out_a)]) == 0
    assert (
        main(
            [
                "eval",
                "-c",
                str(run / "config.yaml"),
                "--weights",
                str(run / "checkpoints/best.ckpt"),
                "--out",
                str(out_b),
            ]
        )
        == 0
    )
    a, b = json.loads(out_a.read_text()), json.loads(out_b.read_text())
    assert a["map"] == b["map"]
    final = json.loads((run / "metrics.json").read_text())
    assert a["map"] == pytest.approx(final["map"], abs=1e-9)
    assert "AP @[IoU=0.50:0.95" in capsys.readouterr().out


def test_predict_writes_annotated_images_and_coco_results(trained):
    out = trained / "pred"
    weights = trained / "run/checkpoints/best.ckpt"
    assert (
        main(
            [
                "predict",
                "--weights",
                str(weights),
                "--source",
                str(trained / "val/images"),
                "--out",
                str(out),
                "--conf",
                "0.01",
            ]
        )
        == 0
    )
    assert len(list(out.glob("*.jpg"))) == 5
    results = json.loads((out / "predictions.json").read_text())
    assert results, "a 0.01 threshold keeps some detections even for a barely trained model"
    first = results[0]
    assert {"image_id", "file_name", "category_id", "bbox", "score"} <= first.keys()
    assert first["file_name"].endswith(".jpg") and len(first["bbox"]) == 4
    assert all(0 <= r["bbox"][0] <= 64 and r["bbox"][2] >= 0 for r in results)


def test_new_run_refuses_a_directory_with_checkpoints(trained, capsys):
    config = trained / "run/config.yaml"
    assert main(["train", "-c", str(config)]) == 2
    err = capsys.readouterr().err
    assert "--resume" in err and "checkpoints" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "-c", "missing.yaml"], "missing.yaml: config file not found"),
        (["eval", "--weights", "nope.ckpt"], "nope.ckpt: checkpoint not found"),
    ],
)
def test_user_errors_are_one_line_with_exit_code_2(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_unknown_config_key_through_the_console_script(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("train:\n  epochs: 1\n  learning_rate: 3\n")
    done = subprocess.run(
        [sys.executable, "-m", "multibox.cli", "train", "-c", str(config)], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: {config}: train.learning_rate: unknown key"


def test_corrupt_checkpoint_is_refused(tmp_path, capsys):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint at all")
    assert main(["eval", "--weights", str(bad)]) == 2
    assert "bad.ckpt: not a readable checkpoint" in capsys.readouterr().err


def test_predict_never_overwrites_images_or_earlier_predictions(trained, capsys):
    weights = str(trained / "run/checkpoints/best.ckpt")
    images = trained / "val/images"
    before = sorted(p.stat().st_mtime_ns for p in images.iterdir())
    assert main(["predict", "--weights", weights, "--source", str(images), "--out", str(images)]) == 2
    assert "overwrite the originals" in capsys.readouterr().err
    assert sorted(p.stat().st_mtime_ns for p in images.iterdir()) == before
    out = trained / "pred_twice"
    assert main(["predict", "--weights", weights, "--source", str(images / "000000.jpg"), "--out", str(out)]) == 0
    assert main(["predict", "--weights", weights, "--source", str(images / "000000.jpg"), "--out", str(out)]) == 2
    assert "already holds predictions.json" in capsys.readouterr().err


def test_an_unreadable_image_met_in_a_loader_worker_is_skipped_with_one_warning(tmp_path, capsys):
    assert main(["data", "synth", str(tmp_path / "d"), "--images", "4", "--size", "64x64"]) == 0
    (tmp_path / "d/images/000002.jpg").write_bytes(b"not a jpeg")
    config = tmp_path / "c.yaml"
    config.write_text(f"data:\n  train: {{images: {tmp_path}/d/images, annotations: {tmp_path}/d/annotations.json}}\n")
    args = [
        "train",
        "-c",
        str(config),
        f"train.output_dir={tmp_path / 'run'}",
        *TINY,
        "data.input_size=[64,64]",
        "data.num_workers=1",
        "data.batch_size=2",
        "train.epochs=2",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "multibox.cli", *args], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    err = done.stderr
    assert err.count("000002.jpg") == 1 and "skipped" in err and "Traceback" not in err
    assert (tmp_path / "run/checkpoints/last.ckpt").is_file()
