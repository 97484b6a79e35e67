"""Learning-rate schedules: each one with warmup against hand-computed values, and the rate a real
Lightning run logs (the `lr` column of metrics.csv) following the schedule step by step."""

import csv
import math

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader

from multibox.config import load_config
from multibox.engine.module import DetectionModule
from multibox.engine.schedules import lr_multiplier


def _schedule(name: str, *overrides: str, epochs: int = 10):
    config = load_config(None, [f"train.epochs={epochs}", f"scheduler.name={name}", *overrides])
    return lr_multiplier(config, total_steps=10 * epochs)


def test_multistep_with_warmup():
    f = _schedule("multistep", "scheduler.milestones=[5,8]", "scheduler.warmup_steps=10", "scheduler.warmup_factor=0.1")
    assert f(0) == pytest.approx(0.1)
    assert f(5) == pytest.approx(0.55)
    assert f(10) == pytest.approx(1.0) and f(49) == pytest.approx(1.0)
    assert f(50) == pytest.approx(0.1) and f(79) == pytest.approx(0.1)
    assert f(80) == pytest.approx(0.01)


def test_cosine_with_warmup():
    # 40 steps, warmup 4 from 0.2; floor 0.1. Warmup multiplies the cosine, which already runs from step 0.
    f = _schedule(
        "cosine", "scheduler.min_lr_ratio=0.1", "scheduler.warmup_steps=4", "scheduler.warmup_factor=0.2", epochs=4
    )
    cosine = lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / 40))  # noqa: E731
    assert f(0) == pytest.approx(0.2)
    assert f(2) == pytest.approx(0.6 * cosine(2))
    assert f(4) == pytest.approx(cosine(4))
    assert f(20) == pytest.approx(0.55)
    assert f(40) == pytest.approx(0.1) and f(45) == pytest.approx(0.1)
    assert all(f(s) >= f(s + 1) for s in range(4, 40))


def test_onecycle_rises_then_anneals():
    # 100 steps, pct_start 0.25: linear 0.04 -> 1 over steps 0..25, then cosine over the remaining 75 steps to 0.05.
    f = _schedule(
        "onecycle",
        "scheduler.pct_start=0.25",
        "scheduler.warmup_factor=0.04",
        "scheduler.min_lr_ratio=0.05",
        "scheduler.warmup_steps=7",
    )  # warmup_steps is ignored by onecycle
    assert f(0) == pytest.approx(0.04)
    assert f(10) == pytest.approx(0.04 + 0.96 * 10 / 25)
    assert f(25) == pytest.approx(1.0)
    assert f(25 + 75 // 3) == pytest.approx(0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi / 3)))
    assert f(100) == pytest.approx(0.05)
    assert max(range(101), key=f) == 25


def test_constant_with_warmup():
    f = _schedule("constant", "scheduler.warmup_steps=4", "scheduler.warmup_factor=0.5")
    assert [f(s) for s in (0, 1, 2, 3)] == pytest.approx([0.5, 0.625, 0.75, 0.875])
    assert f(4) == 1.0 and f(99) == 1.0


def _batches(count: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [
        {
            "images": torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8, generator=g),
            "boxes": torch.tensor([[[0.1, 0.1, 0.5, 0.6]], [[0.3, 0.2, 0.9, 0.7]]]),
            "labels": torch.tensor([[1], [2]]),
        }
        for _ in range(count)
    ]


@pytest.mark.parametrize("name", ["multistep", "cosine", "onecycle", "constant"])
def test_logged_learning_rate_follows_the_schedule(name, tmp_path, one_thread):
    """2 epochs x 4 steps: the rate Lightning logs at each step is base lr x the schedule at that step."""
    config = load_config(
        None,
        [
            "model.name=custom",
            "model.backbone=mobilenet_v3_large",
            "model.width_mult=0.25",
            "model.strides=[8,16,32]",
            "anchors.box_sizes=[[16],[32],[48]]",
            "data.input_size=[64,64]",
            "train.epochs=2",
            "optimizer.lr=0.1",
            f"scheduler.name={name}",
            "scheduler.warmup_steps=3",
            "scheduler.milestones=[1]",
            "scheduler.min_lr_ratio=0.1",
        ],
    )
    module = DetectionModule(config.to_dict(), ["a", "b"], [1, 2])
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=CSVLogger(tmp_path, name="", version=""),
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(module, train_dataloaders=DataLoader(_batches(4), batch_size=None))
    with open(tmp_path / "metrics.csv") as file:
        logged = {int(row["step"]): float(row["lr"]) for row in csv.DictReader(file) if row["lr"]}
    expected = lr_multiplier(module.config, total_steps=8)
    assert sorted(logged) == list(range(8))
    assert [logged[s] for s in range(8)] == pytest.approx([0.1 * expected(s) for s in range(8)], rel=1e-5)
    assert len({round(v, 6) for v in logged.values()}) >= 3  # the schedule actually moved the rate
