"""Exact resume: a run interrupted after epoch 1 and resumed ends with the very same weights as an
uninterrupted one (shuffling and the paper's augmentation on), with loader workers or without."""

import shutil
from pathlib import Path

import lightning as L
import pytest
import torch

import multibox.engine.train as train_module
from multibox.config import load_config
from multibox.data.datamodule import DetectionDataModule
from multibox.data.synth import make_synthetic_dataset
from multibox.engine.checkpoint_io import RandomStateCallback, safe_torch_load
from multibox.engine.train import read_metrics_csv, train


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("resume_data")
    make_synthetic_dataset(root / "train", 8, (64, 64), seed=0)
    make_synthetic_dataset(root / "val", 3, (64, 64), seed=1)
    return root


def tiny_config(root: Path, out: Path, workers: int):
    return load_config(
        None,
        [
            "model.name=ssdlite320_mobilenet_v3_large",
            "model.width_mult=0.25",
            "data.input_size=[64,64]",
            f"data.train.images={root}/train/images",
            f"data.train.annotations={root}/train/annotations.json",
            f"data.val.images={root}/val/images",
            f"data.val.annotations={root}/val/annotations.json",
            "data.batch_size=4",
            f"data.num_workers={workers}",
            "data.augment=ssd",
            "train.epochs=2",
            "train.accelerator=cpu",
            "train.progress=false",
            "train.report=false",
            "optimizer.name=sgd",
            "optimizer.lr=0.01",
            "scheduler.name=cosine",
            "scheduler.warmup_steps=2",
            "train.seed=3",
            f"train.output_dir={out}",
        ],
    )


class CrashAtSecondEpoch(L.Callback):
    """Stands in for a killed job: dies as epoch 2 starts, after epoch 1's last.ckpt is written."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == 1:
            raise RuntimeError("simulated crash")


def epoch_rows(out: Path) -> list[tuple[str, str]]:
    """(epoch, step) of the validation rows of a run's metrics.csv."""
    return [(r["epoch"], r["step"]) for r in read_metrics_csv(out / "metrics.csv") if r.get("val/map")]


def final_state(out: Path) -> dict:
    checkpoint = safe_torch_load(out / "checkpoints/last.ckpt")
    assert checkpoint["epoch"] == 1 and checkpoint["global_step"] == 4  # 2 epochs of 2 batches
    return checkpoint


# With workers: ~20 s idle, ~40 s on the loaded 2-core machine; `pytest -m slow` runs it.
@pytest.mark.parametrize("workers", [0, 2])
def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(data_root, tmp_path, monkeypatch, one_thread, workers):
    # The reports drawn after training play no part in resuming: leave them out to save time.
    monkeypatch.setattr(train_module, "write_evaluation_report", lambda *args, **kwargs: None)
    monkeypatch.setattr(train_module, "plot_training_curves", lambda *args, **kwargs: None)
    straight = tmp_path / "straight"
    train(tiny_config(data_root, straight, workers))

    resumed = tmp_path / "resumed"
    config = tiny_config(data_root, resumed, workers)
    original_callbacks = train_module._callbacks
    with monkeypatch.context() as patch:
        patch.setattr(train_module, "_callbacks", lambda *args: [*original_callbacks(*args), CrashAtSecondEpoch()])
        with pytest.raises(RuntimeError, match="simulated crash"):
            train(config)
    first_epoch = safe_torch_load(resumed / "checkpoints/last.ckpt")
    assert first_epoch["global_step"] == 2 and "RandomStateCallback" in first_epoch["callbacks"]
    control = tmp_path / "control"
    shutil.copytree(resumed, control)
    # --resume alone takes last.ckpt; the workers variant names the checkpoint explicitly.
    train(config, resume=True if workers == 0 else str(resumed / "checkpoints/last.ckpt"))

    expected, actual = final_state(straight), final_state(resumed)
    assert expected["state_dict"].keys() == actual["state_dict"].keys()
    for name, tensor in expected["state_dict"].items():
        assert torch.equal(tensor, actual["state_dict"][name]), name
    momentum = [s["momentum_buffer"] for s in expected["optimizer_states"][0]["state"].values()]
    resumed_momentum = [s["momentum_buffer"] for s in actual["optimizer_states"][0]["state"].values()]
    assert all(torch.equal(a, b) for a, b in zip(momentum, resumed_momentum, strict=True))
    assert expected["lr_schedulers"][0]["last_epoch"] == actual["lr_schedulers"][0]["last_epoch"] == 4
    # The log keeps the interrupted run's first epoch (Lightning's CSVLogger would delete it), each epoch once.
    assert epoch_rows(resumed) == epoch_rows(straight) and len(epoch_rows(straight)) == 2

    if workers == 0:  # the control: without the saved random states the second epoch differs
        monkeypatch.setattr(RandomStateCallback, "load_state_dict", lambda self, state: None)
        monkeypatch.setattr(DetectionDataModule, "load_state_dict", lambda self, state: None)
        train(tiny_config(data_root, control, workers), resume=True)
        uncontrolled = final_state(control)["state_dict"]
        assert any(not torch.equal(t, uncontrolled[k]) for k, t in expected["state_dict"].items())


def test_resume_checkpoint_choice(data_root, tmp_path):
    config = tiny_config(data_root, tmp_path / "run", 0)
    folder = tmp_path / "run/checkpoints"
    folder.mkdir(parents=True)
    (folder / "last.ckpt").write_bytes(b"x")
    (folder / "best.ckpt").write_bytes(b"y")  # newer, but last.ckpt is the run's latest state
    assert train_module.find_resume_checkpoint(config, True) == str(folder / "last.ckpt")
    assert train_module.find_resume_checkpoint(config, str(folder / "best.ckpt")) == str(folder / "best.ckpt")
    with pytest.raises(Exception, match="--resume: checkpoint .*nope.ckpt not found"):
        train_module.find_resume_checkpoint(config, str(folder / "nope.ckpt"))


def test_a_requeued_slurm_job_resumes_by_itself(data_root, tmp_path, monkeypatch):
    config = tiny_config(data_root, tmp_path / "run", 0)
    folder = tmp_path / "run/checkpoints"
    folder.mkdir(parents=True)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert train_module.find_resume_checkpoint(config, None) is None  # requeued before its first checkpoint
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    (folder / "last.ckpt").write_bytes(b"x")
    with pytest.raises(Exception, match="already holds checkpoints"):
        train_module.find_resume_checkpoint(config, None)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert train_module.find_resume_checkpoint(config, None) == str(folder / "last.ckpt")
