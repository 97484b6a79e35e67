"""The training run's trainer: strategy and devices from the config, checkpoints every epoch and
every n steps through the atomic IO, and the refusal to start a new run over an old one."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy

import multibox.engine.train as train_module
from multibox.cli import main
from multibox.config import load_config
from multibox.data.synth import make_synthetic_dataset
from multibox.engine.checkpoint_io import AtomicCheckpointIO


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ([], "auto"),
        (["train.devices=2"], "ddp"),
        (["train.devices='0,1'"], "ddp"),
        (["train.num_nodes=2"], "ddp"),
        (["train.devices=2", "train.strategy=ddp_spawn"], "ddp_spawn"),
        (["train.strategy=ddp_find_unused_parameters_true"], "ddp_find_unused_parameters_true"),
    ],
)
def test_strategy_auto_is_ddp_with_more_than_one_device_or_node(overrides, expected):
    assert train_module.resolve_strategy(load_config(None, overrides)) == expected


def test_trainer_takes_devices_nodes_strategy_and_the_atomic_io(tmp_path):
    config = load_config(None, ["train.accelerator=cpu", "train.devices=2", "train.num_nodes=3", "train.precision=bf16-mixed",
                                f"train.output_dir={tmp_path}", "train.checkpoint_every_n_steps=5"])
    trainer = train_module.build_trainer(config, has_val=True)
    assert isinstance(trainer.strategy, DDPStrategy) and trainer.num_devices == 2 and trainer.num_nodes == 3
    assert trainer.strategy.root_device.type == "cpu"  # DDP on the CPU: gloo (test_ddp.py runs it)
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    assert trainer.precision == "bf16-mixed"
    every = sorted((c.filename, c._every_n_train_steps, c._every_n_epochs) for c in trainer.checkpoint_callbacks)
    assert every == [("best", 0, 1), ("last", 0, 1), ("last", 5, 0)]
    single = train_module.build_trainer(load_config(None, ["train.accelerator=cpu", f"train.output_dir={tmp_path}"]), False)
    assert isinstance(single.strategy, SingleDeviceStrategy)
    assert [c.filename for c in single.checkpoint_callbacks] == ["last"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> tuple[Path, list[tuple[str, int]]]:
    """One epoch of 3 steps with checkpoint_every_n_steps=2, each save recorded as (file, global step)."""
    root = tmp_path_factory.mktemp("train")
    make_synthetic_dataset(root / "data", 6, (64, 64))
    config = root / "config.yaml"
    config.write_text(
        f"data:\n  train: {{images: {root}/data/images, annotations: {root}/data/annotations.json}}\n"
        "  input_size: [64, 64]\n  batch_size: 2\n  num_workers: 0\n"
        "model: {name: ssdlite320_mobilenet_v3_large, width_mult: 0.25}\n"
        f"train: {{epochs: 1, accelerator: cpu, progress: false, output_dir: {root}/run, "
        "checkpoint_every_n_steps: 2}\n"
    )
    saves: list[tuple[str, int]] = []
    real_save = AtomicCheckpointIO.save_checkpoint
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(AtomicCheckpointIO, "save_checkpoint",
                      lambda self, checkpoint, path, **kw: (saves.append((Path(path).name, checkpoint["global_step"])),
                                                            real_save(self, checkpoint, path, **kw)))
        torch.set_num_threads(1)
        try:
            assert main(["train", "-c", str(config)]) == 0
        finally:
            torch.set_num_threads(threads)
    return root, saves


def test_last_checkpoint_every_n_steps_and_every_epoch(finished_run):
    _, saves = finished_run
    assert saves == [("last.ckpt", 2), ("last.ckpt", 3)]  # step 2, then the end of the epoch (step 3)


def test_a_new_run_over_checkpoints_is_refused_and_changes_nothing(finished_run, capsys):
    root, _ = finished_run
    run = root / "run"
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in run.rglob("*") if p.is_file()}
    assert main(["train", "-c", str(root / "config.yaml")]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: {run / 'checkpoints'} already holds checkpoints: pass --resume to continue that run,"
                   " or set another train.output_dir\n")
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in run.rglob("*") if p.is_file()} == before


def test_python_dash_m_multibox_is_the_cli(tmp_path):
    """`torchrun ... -m multibox train ...` needs the package itself to be runnable."""
    done = subprocess.run([sys.executable, "-m", "multibox", "train", "-c", str(tmp_path / "missing.yaml")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr == f"error: {tmp_path / 'missing.yaml'}: config file not found\n"
