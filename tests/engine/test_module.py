"""The LightningModule's pieces: learning-rate schedule and a training step that learns."""

import pytest
import torch

from multibox.config import load_config
from multibox.engine.module import DetectionModule, lr_multiplier


def test_warmup_then_multistep():
    config = load_config(None, ["train.epochs=10", "scheduler.name=multistep", "scheduler.milestones=[5,8]",
                                "scheduler.warmup_steps=10", "scheduler.warmup_factor=0.1"])
    f = lr_multiplier(config, total_steps=100)  # 10 steps per epoch
    assert f(0) == pytest.approx(0.1)
    assert f(5) == pytest.approx(0.55)
    assert f(10) == pytest.approx(1.0) and f(49) == pytest.approx(1.0)
    assert f(50) == pytest.approx(0.1) and f(79) == pytest.approx(0.1)
    assert f(80) == pytest.approx(0.01)


def test_cosine_decays_to_the_floor():
    config = load_config(None, ["train.epochs=4", "scheduler.name=cosine", "scheduler.min_lr_ratio=0.1"])
    f = lr_multiplier(config, total_steps=40)
    assert f(0) == pytest.approx(1.0)
    assert f(20) == pytest.approx(0.55)
    assert f(40) == pytest.approx(0.1)
    assert all(f(s) >= f(s + 1) for s in range(40))


def test_training_steps_fit_a_batch(one_thread):
    config = load_config(None, ["model.name=ssdlite320_mobilenet_v3_large", "model.width_mult=0.5",
                                "data.input_size=[96,96]", "model.norm_momentum=0.3"])
    module = DetectionModule(config.to_dict(), ["a", "b"], [1, 2])
    g = torch.Generator().manual_seed(0)
    batch = {
        "images": torch.randint(0, 256, (4, 3, 96, 96), dtype=torch.uint8, generator=g),
        "boxes": torch.tensor([[[0.1, 0.1, 0.5, 0.6]], [[0.3, 0.2, 0.9, 0.7]], [[0.0, 0.5, 0.4, 1.0]], [[0.5, 0.5, 0.8, 0.9]]]),
        "labels": torch.tensor([[1], [2], [1], [2]]),
    }
    optimizer = torch.optim.AdamW(module.parameters(), lr=2e-3)
    losses = []
    for _ in range(25):
        out = module.criterion(*module(batch["images"]), module.detector.default_boxes, batch["boxes"], batch["labels"])
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        losses.append(out["loss"].item())
    assert losses[-1] < 0.3 * losses[0]
