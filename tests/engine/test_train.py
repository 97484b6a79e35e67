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
    config = load_config(
        None,
        [
            "train.accelerator=cpu",
            "train.devices=2",
            "train.num_nodes=3",
            "train.precision=bf16-mixed",
            f"train.output_dir={tmp_path}",
            "train.checkpoint_every_n_steps=5",
        ],
    )
    trainer = train_module.build_trainer(config, has_val=True)
    assert isinstance(trainer.strategy, DDPStrategy) and trainer.num_devices == 2 and trainer.num_nodes == 3
    assert trainer.strategy.root_device.type == "cpu"  # DDP on the CPU: gloo (test_ddp.py runs it)
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    assert trainer.precision == "bf16-mixed"
    every = sorted((c.filename, c._every_n_train_steps, c._every_n_epochs) for c in trainer.checkpoint_callbacks)
    assert every == [("best", 0, 1), ("last", 0, 1), ("last", 5, 0)]
    single = train_module.build_trainer(
        load_config(None, ["train.accelerator=cpu", f"train.output_dir={tmp_path}"]), False
    )
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
        patch.setattr(
            AtomicCheckpointIO,
            "save_checkpoint",
            lambda self, checkpoint, path, **kw: (
                saves.append((Path(path).name, checkpoint["global_step"])),
                real_save(self, checkpoint, path, **kw),
            ),
        )
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
    assert err == (
        f"error: {run / 'checkpoints'} already holds checkpoints: pass --resume (or set train.resume=auto)"
        " to continue that run, or set another train.output_dir\n"
    )
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in run.rglob("*") if p.is_file()} == before


def test_python_dash_m_multibox_is_the_cli(tmp_path):
    """`torchrun ... -m multibox train ...` needs the package itself to be runnable."""
    done = subprocess.run(
        [sys.executable, "-m", "multibox", "train", "-c", str(tmp_path / "missing.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and done.stderr == f"error: {tmp_path / 'missing.yaml'}: config file not found\n"


@pytest.mark.parametrize(
    "mode, existing, expected",
    [
        ("never", False, None),
        ("never", True, "already holds checkpoints"),
        ("auto", False, None),
        ("auto", True, "last.ckpt"),
        ("must", True, "last.ckpt"),
        ("must", False, "train.resume=must: no checkpoint"),
    ],
)
def test_train_resume_modes(tmp_path, mode, existing, expected):
    """Issue 14 item 8: train.resume never (refuse, the default) | auto (continue when there is a checkpoint) | must."""
    config = load_config(None, [f"train.output_dir={tmp_path}", f"train.resume={mode}"])
    if existing:
        (tmp_path / "checkpoints").mkdir()
        (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"x")
    if expected is not None and "ckpt" not in expected:
        with pytest.raises(train_module.MultiboxError, match=expected):
            train_module.find_resume_checkpoint(config, None)
    else:
        found = train_module.find_resume_checkpoint(config, None)
        assert (found is None) if expected is None else found.endswith(expected)


def test_class_count_checks(tmp_path, recwarn):
    """Issue 14 items 3 and 4: model.num_classes and loss.class_weights are checked against the data's classes."""
    from types import SimpleNamespace

    data = SimpleNamespace(num_classes=3, class_names=["a", "b", "c"])
    with pytest.raises(train_module.MultiboxError, match="model.num_classes is 5 but .* has 3 classes"):
        train_module.check_class_count(load_config(None, ["model.num_classes=5"]), data)
    with pytest.raises(train_module.MultiboxError, match="loss.class_weights has 2 values but .* has 3 classes"):
        train_module.check_class_count(load_config(None, ["loss.class_weights=[1,2]"]), data)
    weights = tmp_path / "w.ckpt"
    config = train_module.check_class_count(
        load_config(None, ["model.num_classes=80", f"model.weights={weights}"]), data
    )
    assert config.model.num_classes == 3 and "re-initialised for 3" in str(recwarn.pop(UserWarning).message)


def test_unreadable_images_in_an_epoch_stop_training():
    """Issue 14 item 1: images that are there but cannot be decoded (the check before training cannot see them)."""
    from types import SimpleNamespace

    from multibox.engine.module import DetectionModule

    fake = SimpleNamespace(
        _epoch_samples={"train": [7, 8], "val": [0, 0]},
        device=torch.device("cpu"),
        trainer=SimpleNamespace(strategy=SimpleNamespace(reduce=lambda t, reduce_op: t)),
        config=load_config(None, ["data.train.images=i", "data.train.annotations=a.json"]),
    )
    with pytest.raises(
        train_module.MultiboxError, match=r"a.json: 7 of 8 training images .*data.max_skipped_fraction=1"
    ):
        DetectionModule._check_skipped(fake, "train")
    fake._epoch_samples["train"] = [8, 8]
    with pytest.raises(train_module.MultiboxError, match=r"no readable training images \(8 of 8 skipped"):
        DetectionModule._check_skipped(fake, "train")
    fake._epoch_samples["train"] = [4, 8]
    DetectionModule._check_skipped(fake, "train")  # half is within the default bound
