"""`multibox tune` on a real Optuna SQLite study: two workers at once lose no trial, a restarted tune continues
the study, crashing trials are recorded and do not end it, and the refusals are one line; `multibox runs ls`
then compares the trial runs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_runner import run_cli

from multibox.cli import main
from multibox.config import load_config
from multibox.data.synth import make_synthetic_dataset

optuna = pytest.importorskip("optuna")
pytest.importorskip("optuna_integration")

SPACE = "optimizer.lr: {log: [1.0e-3, 1.0e-2]}\n"


def _tune(cwd: Path, *args: str) -> subprocess.Popen:
    command = [
        str(Path(sys.executable).with_name("multibox")),
        "tune",
        "-c",
        "config.yaml",
        "--space",
        "space.yaml",
        "--out",
        "tune",
        "--study",
        "s",
        *args,
    ]
    return subprocess.Popen(
        command,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory) -> tuple[Path, list[tuple[int, str, str]]]:
    """Two `multibox tune --trials 2` workers at once on one SQLite study (1-epoch trials, tiny data): the console
    script in a process of its own, and beside it the command line in this process (tests/cli_runner.py), which
    saves the second interpreter's start (~12 s of CPU)."""
    root = tmp_path_factory.mktemp("tune")
    make_synthetic_dataset(root / "data" / "train", 4, (64, 64), seed=1)
    make_synthetic_dataset(root / "data" / "val", 2, (64, 64), seed=2)
    (root / "config.yaml").write_text(
        "data:\n  train: {images: data/train/images, annotations: data/train/annotations.json}\n"
        "  val: {images: data/val/images, annotations: data/val/annotations.json}\n"
        "  input_size: [64, 64]\n  batch_size: 4\n  num_workers: 0\n  augment: none\n"
        "model: {name: ssdlite320_mobilenet_v3_large, width_mult: 0.25}\n"
        "train: {epochs: 1, accelerator: cpu, loggers: [csv], output_dir: runs/base, report: false}\n"
    )
    (root / "space.yaml").write_text(SPACE)
    console = _tune(root, "--trials", "2")
    deadline = time.monotonic() + 300
    while not (root / "tune" / "trial_000").exists():  # started its first trial: the two now overlap
        assert console.poll() is None and time.monotonic() < deadline, console.communicate()
        time.sleep(0.2)
    args = ["tune", "-c", "config.yaml", "--space", "space.yaml", "--out", "tune", "--study", "s", "--trials", "2"]
    here = run_cli(*args, cwd=root)
    stdout, stderr = console.communicate(timeout=900)
    return root, [(console.returncode, stdout, stderr), (here.returncode, here.stdout, here.stderr)]


def _trials(root: Path) -> list:
    return optuna.load_study(study_name="s", storage=f"sqlite:///{root}/tune/study.db").get_trials()


def test_two_workers_on_one_sqlite_study_run_four_distinct_trials(study_dir):
    root, results = study_dir
    for code, out, err in results:
        assert code == 0, err[-3000:]
        assert out.count(" complete val mAP ") == 2  # each worker reports its own two trials
    trials = _trials(root)
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    assert all(t.state.name == "COMPLETE" for t in trials) and len({t.params["optimizer.lr"] for t in trials}) == 4
    for t in trials:  # each trial is a normal run of the config (train.report: false), in tune/trial_NNN
        folder = root / "tune" / f"trial_{t.number:03d}"
        assert t.user_attrs["output_dir"].endswith(f"tune/trial_{t.number:03d}")
        assert (folder / "metrics.json").is_file() and (folder / "metrics.csv").is_file()
        assert not (folder / "report.md").exists() and not (folder / "results.png").exists()
        assert load_config(folder / "config.yaml").optimizer.lr == pytest.approx(t.params["optimizer.lr"])
    best = max(trials, key=lambda t: t.value)
    config = load_config(root / "tune" / "best_config.yaml")  # ready for `multibox train -c`
    assert config.optimizer.lr == pytest.approx(best.params["optimizer.lr"])
    assert config.train.output_dir == root / "tune" / "best" and config.data.train.images == root / "data/train/images"
    report = (root / "tune" / "tune_report.md").read_text()
    assert "![Optimisation history](optimization_history.png)" in report and "4 complete" in report
    assert (root / "tune" / "optimization_history.png").stat().st_size > 1000


def test_runs_ls_shows_the_trials_metrics_and_only_the_differing_keys(study_dir, capsys):
    root, _ = study_dir
    assert main(["runs", "ls", str(root / "tune"), "--plot"]) == 0
    table = capsys.readouterr().out
    assert "4 runs" in table and "optimizer.lr" in table and "trial_003" in table
    assert "train.epochs" not in table and "train.output_dir" not in table  # same in every run / the run's name
    assert (root / "tune" / "runs_val_map.png").stat().st_size > 1000


def test_a_restarted_tune_continues_the_study_and_crashing_trials_do_not_end_it(study_dir, capsys, monkeypatch):
    root, _ = study_dir
    monkeypatch.chdir(root)
    args = ["tune", "-c", "config.yaml", "--space", "space.yaml", "--out", "tune", "--study", "s", "--trials", "2"]
    assert main([*args, "model.weights=missing.ckpt"]) == 0  # both trials crash; the study holds completed ones
    out, err = capsys.readouterr()
    assert "4 trials so far" in out
    failed = [t for t in _trials(root) if t.number >= 4]
    assert [t.state.name for t in failed] == ["FAIL", "FAIL"]
    assert all(
        "missing.ckpt" in t.user_attrs["reason"] and t.user_attrs["reason"].startswith("failed: ") for t in failed
    )
    assert "trial 5 fail (failed: MultiboxError: " in out and "Traceback" not in err
    assert "| 5 | fail |" in (root / "tune" / "tune_report.md").read_text()


@pytest.mark.parametrize(
    "space, args, message",
    [
        ("optimizer.lrr: {log: [1.0e-4, 1.0e-2]}\n", [], "space.yaml: optimizer.lrr: unknown config key"),
        ("optimizer.lr: {log: [0.01, 0.001]}\n", [], "space.yaml: optimizer.lr: low 0.01 must be below high 0.001"),
        ("loss.neg_pos_ratio: {int: [4, 4]}\n", [], "space.yaml: loss.neg_pos_ratio: low 4 must be below high 4"),
        (
            SPACE,
            ["--storage", "sqlite:////no/such/folder/study.db"],
            "--storage: cannot open sqlite:////no/such/folder/study.db "
            "((sqlite3.OperationalError) unable to open database file)",
        ),
        (
            "loss.neg_pos_ratio: {int: [2, 5]}\n",
            [],
            "--study s: exists with a different space (keys optimizer.lr); use the same space file or another --study",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(study_dir, capsys, monkeypatch, space, args, message):
    root, _ = study_dir
    (root / "bad_space.yaml").write_text(space)
    monkeypatch.chdir(root)
    code = main(
        [
            "tune",
            "-c",
            "config.yaml",
            "--space",
            "bad_space.yaml",
            "--out",
            "tune",
            "--study",
            "s",
            "--trials",
            "1",
            *args,
        ]
    )
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {message.replace('space.yaml', 'bad_space.yaml', 1)}"
    ]
