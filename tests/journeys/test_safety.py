"""Journeys of issue 14: runs that used to give wrong results, unreadable files or a silent stop.

Each test runs the `multibox` command line (in-process, see tests/cli_runner.py; the Ctrl-C journey starts the
real console script and signals it, the SIGTERM one that follows signals this process), with a config
written by hand and the working directory set to the config's folder (so relative paths mean the same whichever
folder they resolve from).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest
from cli_runner import console_script, run_cli

from multibox.data.synth import make_synthetic_dataset

REPO = Path(__file__).resolve().parents[2]

CONFIG = """\
data:
  train: {images: ds/images, annotations: ds/annotations.json}
  val: {images: ds/images, annotations: ds/annotations.json}
  input_size: [64, 64]
  batch_size: 4
  num_workers: 0
  augment: none
model: {name: ssdlite320_mobilenet_v3_large, width_mult: 0.25}
train: {epochs: 1, output_dir: run, accelerator: cpu, progress: false}
eval: {max_detections: 20}
"""


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def multibox(cwd: Path, *args: str, console: bool = False) -> subprocess.CompletedProcess:
    """In-process unless ``console`` (tests/cli_runner.py); the signal journeys below always start the script."""
    return run_cli(*args, cwd=cwd, console=console)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A folder with cfg.yaml and ds/ (8 synthetic 64x64 images, COCO), plus a few broken annotation files."""
    root = tmp_path_factory.mktemp("safety")
    make_synthetic_dataset(root / "ds", 8, (64, 64), seed=0)
    (root / "cfg.yaml").write_text(CONFIG, encoding="utf-8")
    coco = json.loads((root / "ds" / "annotations.json").read_text())
    for name, missing in (("none.json", 8), ("most.json", 5)):
        broken = json.loads(json.dumps(coco))
        for image in broken["images"][:missing]:
            image["file_name"] = "gone_" + image["file_name"]
        (root / "ds" / name).write_text(json.dumps(broken), encoding="utf-8")
    return root


def _error(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    return done.stderr.strip().splitlines()[-1]


# 1. no readable images: an error, not a report of an untrained model
def test_no_readable_training_images_stops(work: Path) -> None:
    line = _error(
        multibox(work, "train", "-c", "cfg.yaml", "data.train.annotations=ds/none.json", "train.output_dir=r1")
    )
    assert line.startswith("error: ") and "none.json: no readable training images (8 of 8 skipped" in line
    assert not (work / "r1" / "checkpoints").exists()


def test_no_readable_validation_images_stops(work: Path) -> None:
    line = _error(multibox(work, "train", "-c", "cfg.yaml", "data.val.annotations=ds/none.json", "train.output_dir=r1"))
    assert "none.json: no readable validation images (8 of 8 skipped" in line


def test_mostly_unreadable_stops_and_names_the_override(work: Path) -> None:
    line = _error(
        multibox(work, "train", "-c", "cfg.yaml", "data.train.annotations=ds/most.json", "train.output_dir=r1")
    )
    assert "most.json: 5 of 8 training images are missing" in line and "data.max_skipped_fraction=1" in line


# 2. an Ultralytics YOLO folder: splits from data.yaml, never merged
@pytest.fixture(scope="module")
def yolo(work: Path) -> Path:
    """Ultralytics layout: images/{train,val}, labels/{train,val}, data.yaml (5 train, 3 val images)."""
    root = work / "yolo"
    done = multibox(
        work,
        "data",
        "convert",
        "--from",
        "coco",
        "--to",
        "yolo",
        "ds/images",
        "flat",
        "--annotations",
        "ds/annotations.json",
    )
    assert done.returncode == 0, done.stderr
    for split, names in (
        ("train", sorted((work / "flat" / "images").iterdir())[:5]),
        ("val", sorted((work / "flat" / "images").iterdir())[5:]),
    ):
        for kind in ("images", "labels"):
            (root / kind / split).mkdir(parents=True)
        for image in names:
            shutil.copy(image, root / "images" / split / image.name)
            shutil.copy(work / "flat" / "labels" / f"{image.stem}.txt", root / "labels" / split / f"{image.stem}.txt")
    names = "\n".join(f"  {i}: {n}" for i, n in enumerate(["circle", "square", "triangle", "cross", "star"]))
    (root / "data.yaml").write_text(f"path: .\ntrain: images/train\nval: images/val\nnames:\n{names}\n")
    return root


@pytest.mark.parametrize("images", ["yolo", "yolo/data.yaml"])
def test_yolo_root_reads_the_splits_of_data_yaml(work: Path, yolo: Path, images: str) -> None:
    (work / "y.yaml").write_text(f"data:\n  format: yolo\n  train: {{images: {images}}}\n  val: {{images: {images}}}\n")
    done = multibox(work, "data", "validate", "-c", "y.yaml")
    assert done.returncode == 0, done.stderr
    counts = re.findall(r"(\d+) images \(\d+ decoded\)", done.stdout)
    assert counts == ["5", "3"], done.stdout


def test_yolo_split_folders_without_data_yaml_are_not_merged(work: Path, yolo: Path) -> None:
    bare = work / "bare"
    shutil.copytree(yolo, bare)
    (bare / "data.yaml").unlink()
    (work / "b.yaml").write_text(
        "data:\n  format: yolo\n  class_names: [circle, square, triangle, cross, star]\n  train: {images: bare}\n"
    )
    line = _error(multibox(work, "data", "validate", "-c", "b.yaml"))
    assert "holds split folders (train, val)" in line


# 3. and 4. class counts that disagree with the data
def test_num_classes_that_disagrees_with_the_data_is_an_error(work: Path) -> None:
    line = _error(multibox(work, "train", "-c", "cfg.yaml", "model.num_classes=3", "train.output_dir=r3"))
    assert "model.num_classes is 3 but" in line and "has 5 classes" in line


def test_class_weights_length_is_checked_against_the_data(work: Path) -> None:
    line = _error(multibox(work, "train", "-c", "cfg.yaml", "loss.class_weights=[1,2]", "train.output_dir=r4"))
    assert "loss.class_weights has 2 values but" in line and "has 5 classes" in line


# 8. train.resume
def test_resume_must_without_a_checkpoint_fails(work: Path) -> None:
    line = _error(multibox(work, "train", "-c", "cfg.yaml", "train.resume=must", "train.output_dir=r8"))
    assert "train.resume=must: no checkpoint" in line


# 5., 6. and 8.: Ctrl-C, then the same command with train.resume=auto continues, then SIGTERM
INTERRUPTED = re.compile(
    r"interrupted at epoch (\d+) step (\d+); last checkpoint: (\S+); "
    r"continue with: multibox train -c cfg.yaml (.*)--resume$",
    re.MULTILINE,  # the run's warning count may follow the line
)


def _train_until_signal(
    work: Path, args: list[str], number: int, after: float
) -> tuple[subprocess.CompletedProcess, float]:
    """Start training, send `number` once last.ckpt is newer than `after`; the finished process and the send time."""
    last = work / "ri" / "checkpoints" / "last.ckpt"
    old = os.umask(0o027)  # the child inherits it: files must be 0640, not 0600 nor 0644
    try:
        process = subprocess.Popen(
            [*console_script(), "train", "-c", "cfg.yaml", *args],
            cwd=work,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    finally:
        os.umask(old)
    deadline = time.monotonic() + 240
    try:
        while not (last.is_file() and last.stat().st_mtime > after):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no checkpoint written"
            time.sleep(0.2)
        sent = time.time()
        process.send_signal(number)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr), sent


def _train_here_until_signal(work: Path, args: list[str], number: int, after: float) -> subprocess.CompletedProcess:
    """As above, but `multibox train` runs in this process (tests/cli_runner.py) and a thread sends the signal to
    this process: the command's own handler must take it, as in the console script (which costs a second
    interpreter start, ~12 s of CPU, to show the same)."""
    last = work / "ri" / "checkpoints" / "last.ckpt"
    stop = threading.Event()

    def send() -> None:
        deadline = time.monotonic() + 240
        while not stop.is_set() and time.monotonic() < deadline:
            if last.is_file() and last.stat().st_mtime > after:
                os.kill(os.getpid(), number)
                return
            time.sleep(0.2)

    watcher = threading.Thread(target=send, daemon=True)
    watcher.start()
    try:
        return multibox(work, "train", "-c", "cfg.yaml", *args)
    finally:
        stop.set()
        watcher.join()


def test_interrupt_keeps_a_checkpoint_and_auto_resume_continues(work: Path) -> None:
    args = ["train.epochs=200", "train.output_dir=ri", "train.checkpoint_every_n_steps=1", "train.resume=auto"]
    done, _ = _train_until_signal(work, args, signal.SIGINT, after=0.0)
    assert done.returncode == 130, done.stderr
    match = INTERRUPTED.search(done.stderr)
    assert match, done.stderr
    first_step, checkpoint = int(match.group(2)), work / match.group(3)  # relative to the working directory
    assert first_step >= 1 and checkpoint.resolve() == (work / "ri" / "checkpoints" / "last.ckpt").resolve()
    assert match.group(4).split() == args
    for output in (checkpoint, work / "ri" / "config.yaml"):  # 5.: the umask decides, as for any file
        assert stat.S_IMODE(output.stat().st_mode) == 0o640, output

    # never (the default) refuses to reuse the folder; auto (in args) continues it, here until SIGTERM
    line = _error(multibox(work, "train", "-c", "cfg.yaml", *args[:-1]))
    assert "pass --resume (or set train.resume=auto)" in line
    done = _train_here_until_signal(work, args, signal.SIGTERM, after=checkpoint.stat().st_mtime)
    assert done.returncode == 130, done.stderr
    match = INTERRUPTED.search(done.stderr)
    assert match and int(match.group(2)) > first_step, done.stderr  # continued, not started again
    assert "Traceback" not in done.stderr
