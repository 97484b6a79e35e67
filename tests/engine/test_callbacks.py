"""Training callbacks in a real (tiny) run: EMA weights in validation, checkpoints and resume;
throughput logging; and loss.class_weights: auto written out as numbers."""

import csv
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import EMAWeightAveraging
from torch.utils.data import DataLoader

from multibox.config import load_config
from multibox.data.synth import make_synthetic_dataset
from multibox.engine import train as train_module
from multibox.engine.callbacks import ThroughputLogger, training_callbacks
from multibox.engine.checkpoint import load_checkpoint
from multibox.engine.module import DetectionModule

DECAY = 0.5  # large steps, so averaged and raw weights differ clearly after two updates


class WeightRecorder(L.Callback):
    """The raw weights at the start, after every optimizer step, and those validation runs with."""

    def __init__(self) -> None:
        self.start: dict[str, torch.Tensor] = {}
        self.steps: list[dict[str, torch.Tensor]] = []
        self.validated: list[dict[str, torch.Tensor]] = []

    @staticmethod
    def _floats(module: L.LightningModule) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in module.state_dict().items() if v.is_floating_point()}

    def on_train_start(self, trainer, pl_module):
        self.start = self._floats(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps.append(self._floats(pl_module))

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if batch_idx == 0:
            self.validated.append(self._floats(pl_module))


def _batches(count: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(count)
    return [
        {
            "images": torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8, generator=g),
            "boxes": torch.tensor([[[0.1, 0.1, 0.5, 0.6]], [[0.3, 0.2, 0.9, 0.7]]]),
            "labels": torch.tensor([[1], [2]]),
        }
        for _ in range(count)
    ]


def _ema(start: dict[str, torch.Tensor] | None, steps: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """torch's EMA rule: the first update copies the weights (when there is no average yet), then lerps by DECAY."""
    average = dict(start) if start is not None else dict(steps[0])
    for weights in steps[0 if start is not None else 1 :]:
        average = {k: DECAY * average[k] + (1 - DECAY) * weights[k] for k in average}
    return average


def _assert_state_equal(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert expected and set(expected) <= set(actual)
    for key, value in expected.items():
        torch.testing.assert_close(actual[key].float(), value, msg=key)


def _train(config, recorder: WeightRecorder, resume: bool = False) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train_module, "training_callbacks", lambda c: training_callbacks(c) + [recorder])
        train_module.train(config, resume=resume or None)


TINY = [
    "model.name=custom",
    "model.backbone=mobilenet_v3_large",
    "model.width_mult=0.25",
    "model.strides=[8,16,32]",
    "anchors.box_sizes=[[16],[32],[48]]",
    "data.input_size=[64,64]",
    "optimizer.name=adamw",
    "optimizer.lr=0.01",
    "train.ema=true",
    f"train.ema_decay={DECAY}",
]


def _config(root: Path, epochs: int):
    """No val set: train() then skips the final COCO evaluation and its report, which this test does not need."""
    return load_config(
        None,
        [
            f"data.train.images={root}/train/images",
            f"data.train.annotations={root}/train/annotations.json",
            *TINY,
            "data.batch_size=4",
            "data.num_workers=0",
            "data.augment=none",
            "train.accelerator=cpu",
            "train.progress=false",
            "train.log_every_n_steps=1",
            f"train.epochs={epochs}",
            "loss.class_weights=auto",
            f"train.output_dir={root / 'run'}",
        ],
    )


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory):
    """One epoch of 2 steps with EMA (decay 0.5), then a resumed second epoch."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("ema")
    make_synthetic_dataset(root / "train", 8, (64, 64), seed=0)
    first, second = WeightRecorder(), WeightRecorder()
    _train(_config(root, epochs=1), first)
    first_checkpoint = torch.load(root / "run/checkpoints/last.ckpt", weights_only=True)
    first_loaded = load_checkpoint(
        root / "run/checkpoints/last.ckpt"
    ).detector.state_dict()  # what eval and predict use
    _train(_config(root, epochs=2), second, resume=True)
    torch.set_num_threads(threads)
    return root / "run", first, first_checkpoint, first_loaded, second


def test_ema_checkpoint_holds_the_averaged_weights(ema_run):
    _, recorder, checkpoint, loaded, _ = ema_run
    assert len(recorder.steps) == 2
    expected = _ema(None, recorder.steps)
    _assert_state_equal(checkpoint["state_dict"], expected)
    _assert_state_equal(checkpoint["current_model_state"], recorder.steps[-1])  # the raw weights, for resuming
    key = "detector.model.head.classification_head.module_list.0.1.weight"
    assert not torch.allclose(checkpoint["state_dict"][key], checkpoint["current_model_state"][key])
    _assert_state_equal({f"detector.{k}": v for k, v in loaded.items()}, expected)


def test_validation_runs_on_the_averaged_weights(tmp_path, one_thread):
    config = load_config(None, [*TINY, "train.epochs=1"])
    module = DetectionModule(config.to_dict(), ["a", "b"], [1, 2])
    recorder = WeightRecorder()
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[*training_callbacks(config), recorder],
    )
    trainer.fit(module, DataLoader(_batches(3), batch_size=None), DataLoader(_batches(1), batch_size=None))
    expected = _ema(None, recorder.steps)
    _assert_state_equal(recorder.validated[0], expected)
    _assert_state_equal(module.state_dict(), expected)  # and the module ends with them (Lightning's on_train_end)


def test_resume_continues_the_average(ema_run):
    run, _, first, _, recorder = ema_run
    assert len(recorder.steps) == 2
    _assert_state_equal(
        recorder.start, {k: v for k, v in first["current_model_state"].items() if v.is_floating_point()}
    )
    average = {k: v for k, v in first["state_dict"].items() if v.is_floating_point()}
    resumed = torch.load(run / "checkpoints/last.ckpt", weights_only=True)
    assert resumed["epoch"] == 1
    _assert_state_equal(resumed["state_dict"], _ema(average, recorder.steps))


def test_throughput_is_logged_per_step_and_per_epoch(ema_run):
    run = ema_run[0]
    with open(run / "metrics.csv") as file:
        rows = [row for row in csv.DictReader(file) if row["train/images_per_s"]]
    step_rows = [row for row in rows if row["train/loss"]]  # step rows carry the step's loss too
    epoch_rows = [row for row in rows if not row["train/loss"]]
    # Every step (log_every_n_steps=1) and each epoch, at least of the resumed run
    # (the CSV may keep the first run's rows).
    assert {2, 3} <= {int(row["step"]) for row in step_rows} and len(step_rows) in (2, 4)
    assert 1 in {int(row["epoch"]) for row in epoch_rows} and len(epoch_rows) == len(
        {row["epoch"] for row in epoch_rows}
    )
    assert all(float(row["train/images_per_s"]) > 0 for row in rows)
    assert "gpu/max_memory_gb" not in rows[0]  # CPU run: no GPU memory column


def test_auto_class_weights_are_saved_as_numbers(ema_run):
    run = ema_run[0]
    saved = yaml.safe_load((run / "config.yaml").read_text())["loss"]["class_weights"]
    checkpoint = torch.load(run / "checkpoints/last.ckpt", weights_only=True)
    assert isinstance(saved, list) and len(saved) == 5 and sum(saved) / len(saved) == pytest.approx(1.0, abs=0.3)
    assert checkpoint["hyper_parameters"]["config"]["loss"]["class_weights"] == saved


def test_training_callbacks_follow_the_config():
    plain = training_callbacks(load_config(None, []))
    assert [type(c) for c in plain] == [ThroughputLogger]
    ema = training_callbacks(load_config(None, ["train.ema=true", "train.ema_decay=0.99"]))
    averaging = [c for c in ema if isinstance(c, EMAWeightAveraging)]
    assert len(averaging) == 1
    averaged, current = torch.zeros(1), torch.ones(1)
    assert averaging[0]._kwargs["avg_fn"](averaged, current, 1) == pytest.approx(
        0.01
    )  # decay 0.99 reached the callback


def test_progress_bar_counts_epochs_from_one_without_v_num(tmp_path):
    """Issue 14 item 14: a 1-epoch run showed `Epoch 0/0` and `v_num: oard`."""
    from types import SimpleNamespace

    from multibox.engine.callbacks import ProgressBar

    bar = ProgressBar()
    bar._trainer = SimpleNamespace(max_epochs=1)
    assert bar._get_train_description(0).strip() == "Epoch 1/1"
    from multibox.engine.train import build_trainer

    config = load_config(None, ["train.accelerator=cpu", f"train.output_dir={tmp_path}"])
    assert ProgressBar in {type(c) for c in build_trainer(config, False).callbacks}
