"""The LightningModule: a training step that learns, non-finite losses (stop or skip),
channels_last and compile. Schedules are in test_schedules.py."""

import csv
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader

from multibox.cli import main
from multibox.config import load_config
from multibox.data.synth import make_synthetic_dataset
from multibox.engine.checkpoint import load_checkpoint
from multibox.engine.module import DetectionModule
from multibox.engine.train import train

TINY = [
    "model.name=custom",
    "model.backbone=mobilenet_v3_large",
    "model.width_mult=0.25",
    "model.strides=[8,16,32]",
    "anchors.box_sizes=[[16],[32],[48]]",
    "data.input_size=[64,64]",
]


def test_training_steps_fit_a_batch(one_thread):
    config = load_config(
        None,
        [
            "model.name=ssdlite320_mobilenet_v3_large",
            "model.width_mult=0.5",
            "data.input_size=[96,96]",
            "model.norm_momentum=0.3",
        ],
    )
    module = DetectionModule(config.to_dict(), ["a", "b"], [1, 2])
    g = torch.Generator().manual_seed(0)
    batch = {
        "images": torch.randint(0, 256, (4, 3, 96, 96), dtype=torch.uint8, generator=g),
        "boxes": torch.tensor(
            [[[0.1, 0.1, 0.5, 0.6]], [[0.3, 0.2, 0.9, 0.7]], [[0.0, 0.5, 0.4, 1.0]], [[0.5, 0.5, 0.8, 0.9]]]
        ),
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


def _batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "images": torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8, generator=g),
        "boxes": torch.tensor([[[0.1, 0.1, 0.5, 0.6]], [[0.3, 0.2, 0.9, 0.7]]]),
        "labels": torch.tensor([[1], [2]]),
    }


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    return make_synthetic_dataset(root / "train", 8, (64, 64), seed=0)


def _run_overrides(data: Path, out: Path) -> list[str]:
    """4 images per batch, 2 steps per epoch, no val set."""
    return [
        f"data.train.images={data}/images",
        f"data.train.annotations={data}/annotations.json",
        *TINY,
        "data.batch_size=4",
        "data.num_workers=0",
        "data.augment=none",
        "train.accelerator=cpu",
        "train.progress=false",
        "train.log_every_n_steps=1",
        f"train.output_dir={out}",
    ]


def _poison_step(monkeypatch, step: int) -> list[dict[str, torch.Tensor]]:
    """Make the training loss NaN at optimizer step `step`; returns a head weight as each training step began."""
    original = DetectionModule._losses
    seen: list[torch.Tensor] = []

    def poisoned(self, batch):
        losses, regression, logits = original(self, batch)
        if self.training:
            seen.append(self.detector.model.head.classification_head.module_list[0][1].weight.detach().clone())
            if self.global_step == step:
                losses = {
                    **losses,
                    "loss": losses["loss"] * float("nan"),
                    "loss_cls": losses["loss_cls"] * float("nan"),
                }
        return losses, regression, logits

    monkeypatch.setattr(DetectionModule, "_losses", poisoned)
    return seen


def test_non_finite_loss_stops_with_one_line_and_keeps_the_last_checkpoint(
    synthetic, tmp_path, monkeypatch, capsys, one_thread
):
    _poison_step(monkeypatch, step=2)  # the first step of the second epoch
    config = tmp_path / "config.yaml"
    config.write_text("loss: {class_weights: auto}\n")
    out = tmp_path / "run"
    assert main(["train", "-c", str(config), *_run_overrides(synthetic, out), "train.epochs=3"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:") or "Traceback" in line]
    assert len(errors) == 1
    assert errors[0].startswith("error: non-finite loss at epoch 1 step 2 (loss_bbox=")
    assert "loss_cls=nan" in errors[0] and errors[0].endswith(
        "training stopped, checkpoints hold the last finite weights"
    )

    checkpoint = torch.load(out / "checkpoints/last.ckpt", weights_only=True)
    assert (checkpoint["epoch"], checkpoint["global_step"]) == (0, 2)  # the first epoch's, not overwritten
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values() if v.is_floating_point())
    loaded = load_checkpoint(out / "checkpoints/last.ckpt")
    assert all(torch.isfinite(p).all() for p in loaded.detector.parameters())
    # loss.class_weights: auto was resolved before training: numbers in config.yaml and the checkpoint.
    weights = yaml.safe_load((out / "config.yaml").read_text())["loss"]["class_weights"]
    assert isinstance(weights, list) and len(weights) == 5
    assert loaded.config.loss.class_weights == weights


def test_non_finite_loss_is_skipped_and_counted(synthetic, tmp_path, monkeypatch, one_thread):
    seen = _poison_step(monkeypatch, step=1)
    out = tmp_path / "run"
    with pytest.warns(RuntimeWarning, match="non-finite loss at epoch 0 step 1 .*step skipped"):
        train(load_config(None, [*_run_overrides(synthetic, out), "train.epochs=2", "train.on_nan=skip"]))
    assert len(seen) == 4
    assert not torch.equal(seen[0], seen[1])  # step 0 updated the weights
    assert torch.equal(seen[1], seen[2])  # step 1 (NaN) did not
    with open(out / "metrics.csv") as file:
        counts = [
            float(row["train/skipped_nonfinite"]) for row in csv.DictReader(file) if row["train/skipped_nonfinite"]
        ]
    assert counts == [1.0, 0.0]  # per epoch
    loaded = load_checkpoint(out / "checkpoints/last.ckpt")
    assert all(torch.isfinite(p).all() for p in loaded.detector.parameters())


def test_channels_last_gives_the_same_loss(one_thread):
    plain = DetectionModule(load_config(None, TINY).to_dict(), ["a", "b"], [1, 2])
    fast = DetectionModule(load_config(None, [*TINY, "train.channels_last=true"]).to_dict(), ["a", "b"], [1, 2])
    fast.load_state_dict(plain.state_dict())
    fast.prepare_network()
    conv = fast.detector.model.backbone.stages[0][0][0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    batch = _batch()
    expected, actual = plain._losses(batch)[0], fast._losses(batch)[0]
    for key in ("loss", "loss_bbox", "loss_cls"):
        torch.testing.assert_close(actual[key], expected[key], rtol=1e-4, atol=1e-5)
    assert fast.state_dict().keys() == plain.state_dict().keys()


@pytest.mark.slow
def test_compiled_training_writes_checkpoints_that_load(tmp_path, monkeypatch, one_thread):
    """nn.Module.compile keeps parameter names, so a compiled run's checkpoint loads into a plain detector.

    TorchDynamo traces the network as in a real run, but the aot_eager backend stands in for inductor:
    inductor's C++ build of this network took 13 minutes on the loaded 2-core dev machine (and passed).
    """
    compile_module = torch.nn.Module.compile
    monkeypatch.setattr(
        torch.nn.Module, "compile", lambda self, **kwargs: compile_module(self, backend="aot_eager", **kwargs)
    )
    config = load_config(None, [*TINY, "train.compile=true", "train.epochs=1"])
    module = DetectionModule(config.to_dict(), ["a", "b"], [1, 2])
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ModelCheckpoint(dirpath=tmp_path, filename="last")],
    )
    trainer.fit(module, DataLoader([_batch(0), _batch(1)], batch_size=None))
    assert module.detector.model._compiled_call_impl is not None
    loaded = load_checkpoint(tmp_path / "last.ckpt")
    assert loaded.detector.state_dict().keys() == module.detector.state_dict().keys()
    for key, value in module.detector.state_dict().items():
        torch.testing.assert_close(loaded.detector.state_dict()[key], value)
