"""Checkpoint files: atomic writes, weights_only reads (also on Lightning's resume path), random states."""

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from multibox.cli import main
from multibox.data.synth import make_synthetic_dataset
from multibox.engine.checkpoint import read_checkpoint
from multibox.engine.checkpoint_io import (
    AtomicCheckpointIO,
    capture_random_state,
    restore_random_state,
    safe_torch_load,
)
from multibox.errors import MultiboxError


def test_save_writes_a_synced_temporary_file_then_renames_it(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd)))
    monkeypatch.setattr(
        os, "replace", lambda a, b: (events.append(("replace", Path(a).name, Path(b).name)), real_replace(a, b))
    )
    path = tmp_path / "checkpoints/last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": torch.tensor(3)}, path)
    assert events[0] == "fsync"  # the data is on disk before the name points at it
    _, temporary, final = events[1]
    assert final == "last.ckpt" and temporary.startswith(".last.ckpt.") and temporary.endswith(".tmp")
    assert events[2:] == ["fsync"]  # then the folder entry
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]
    assert AtomicCheckpointIO().load_checkpoint(path)["step"].item() == 3


def test_a_crash_mid_write_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"epoch": 1, "weights": torch.arange(1000.0)}, path)
    before = path.read_bytes()
    real_save = torch.save
    seen_during_write = []

    def dies_half_way(obj, file, *args, **kwargs):
        real_save(obj, file, *args, **kwargs)
        file.truncate(100)  # part of the bytes reached the disk, then the job died
        seen_during_write.append(sorted(p.name for p in tmp_path.iterdir()))
        assert path.read_bytes() == before  # the partial file never carries the final name
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(OSError, match="No space left"):
        io.save_checkpoint({"epoch": 2, "weights": torch.zeros(1000)}, path)
    assert len(seen_during_write[0]) == 2 and seen_during_write[0][0].startswith(".last.ckpt.")
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left behind
    assert path.read_bytes() == before
    loaded = io.load_checkpoint(path)
    assert loaded["epoch"] == 1 and torch.equal(loaded["weights"], torch.arange(1000.0))


def test_random_states_survive_a_weights_only_round_trip(tmp_path):
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    np.random.normal()  # a cached Gaussian is part of numpy's state
    AtomicCheckpointIO().save_checkpoint({"rng": capture_random_state()}, tmp_path / "c.ckpt")
    expected = (torch.rand(3), np.random.rand(3), np.random.normal(), random.random())
    torch.manual_seed(9), np.random.seed(9), random.seed(9)
    restore_random_state(safe_torch_load(tmp_path / "c.ckpt")["rng"])
    actual = (torch.rand(3), np.random.rand(3), np.random.normal(), random.random())
    assert torch.equal(expected[0], actual[0]) and np.array_equal(expected[1], actual[1])
    assert expected[2:] == actual[2:]


class Payload:
    """Unpickling this runs a shell command: what a hostile checkpoint would carry."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def hostile_checkpoint(tmp_path) -> tuple[Path, Path]:
    marker, path = tmp_path / "payload_ran", tmp_path / "hostile.ckpt"
    torch.save(
        {"state_dict": {}, "hyper_parameters": {"config": Payload(marker), "class_names": [], "category_ids": []}}, path
    )
    assert not marker.exists()
    return path, marker


def test_a_crafted_pickle_is_refused_and_its_payload_never_runs(hostile_checkpoint):
    path, marker = hostile_checkpoint
    for load in (read_checkpoint, AtomicCheckpointIO().load_checkpoint, safe_torch_load):
        with pytest.raises(MultiboxError) as error:
            load(path)
        assert str(error.value).startswith(f"{path}: not a readable checkpoint") and "\n" not in str(error.value)
    assert not marker.exists()


def test_resuming_from_a_crafted_pickle_is_refused_through_lightning(hostile_checkpoint, tmp_path, capsys, one_thread):
    """`--resume PATH` reaches Lightning's ckpt_path loading, which goes through AtomicCheckpointIO."""
    path, marker = hostile_checkpoint
    make_synthetic_dataset(tmp_path / "data", 4, (64, 64))
    config = tmp_path / "config.yaml"
    config.write_text(
        f"data:\n  train: {{images: {tmp_path}/data/images, annotations: {tmp_path}/data/annotations.json}}\n"
        "  input_size: [64, 64]\n  batch_size: 2\n  num_workers: 0\n"
        f"model: {{name: ssdlite320_mobilenet_v3_large, width_mult: 0.25}}\n"
        f"train: {{epochs: 1, accelerator: cpu, progress: false, output_dir: {tmp_path}/run}}\n"
    )
    assert main(["train", "-c", str(config), "--resume", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: not a readable checkpoint") and err.count("\n") == 1
    assert not marker.exists()
    assert not list((tmp_path / "run").glob("checkpoints/*.ckpt"))
