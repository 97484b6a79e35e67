"""Training on the GPU: bf16 and fp16 mixed-precision runs of `multibox train` (one with channels_last and
data.decode: gpu), their losses against fp32 on the same batch, and channels_last against the default layout."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from multibox.cli import main
from multibox.config import load_config
from multibox.data.datamodule import DetectionDataModule
from multibox.engine.checkpoint_io import safe_torch_load
from multibox.engine.module import DetectionModule

# (precision, channels_last, decode): every setting a GPU run changes is in one of the two runs.
RUNS = [("bf16-mixed", True, "gpu"), ("16-mixed", False, "cpu")]


def _skip_fp16_on_cpu(precision: str, on_gpu: bool) -> None:
    if precision == "16-mixed" and not on_gpu:
        pytest.skip("fp16 mixed precision is for CUDA (the CPU dry run covers bf16)")


@pytest.mark.parametrize("precision, channels_last, decode", RUNS)
def test_mixed_precision_training_run(train_config, tmp_path, on_gpu, precision, channels_last, decode):
    _skip_fp16_on_cpu(precision, on_gpu)
    run = tmp_path / "run"
    overrides = [
        f"train.output_dir={run}",
        f"train.precision={precision}",
        f"train.channels_last={channels_last}",
        f"data.decode={decode}",
    ]
    assert main(["train", "-c", str(train_config), *overrides]) == 0
    with open(run / "metrics.csv", encoding="utf-8") as handle:
        losses = [float(row["train/loss"]) for row in csv.DictReader(handle) if row.get("train/loss")]
    assert len(losses) == 4 and all(math.isfinite(loss) for loss in losses), losses  # 2 epochs x 2 steps
    assert 0.0 <= json.loads((run / "metrics.json").read_text())["map"] <= 1.0
    state = safe_torch_load(run / "checkpoints/last.ckpt")["state_dict"]
    weights = [t for t in state.values() if t.is_floating_point()]
    assert all(t.dtype == torch.float32 and bool(torch.isfinite(t).all()) for t in weights)  # fp32 master weights
    assert main(["eval", "--weights", str(run / "checkpoints/last.ckpt"), "--out", str(tmp_path / "eval.json")]) == 0


def _module_and_batch(train_config: Path, device: torch.device, *overrides: str):
    """A DetectionModule on `device` and one validation batch (no augmentation) ready for it."""
    config = load_config(train_config, list(overrides))
    data = DetectionDataModule(config)
    torch.manual_seed(0)
    module = DetectionModule(config.to_dict(), data.class_names, data.category_ids).to(device)
    module.prepare_network()
    batch = data.prepare_batch(next(iter(data.val_dataloader())), device)
    return module, batch


@pytest.mark.parametrize("dtype, tolerance", [(torch.bfloat16, 0.05), (torch.float16, 0.01)])
def test_autocast_loss_and_gradients_follow_fp32(train_config, device, on_gpu, no_tf32, dtype, tolerance):
    _skip_fp16_on_cpu("16-mixed" if dtype == torch.float16 else "bf16-mixed", on_gpu)
    module, batch = _module_and_batch(train_config, device)
    module.train()

    def loss_and_grad(autocast: bool) -> tuple[float, torch.Tensor]:
        module.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=autocast):
            loss = module._losses(batch)[0]["loss"]
        loss.backward()
        grad = module.detector.model.head.classification_head.module_list[0][1].weight.grad
        return float(loss.detach()), grad.detach().float().clone()

    reference, reference_grad = loss_and_grad(False)
    mixed, mixed_grad = loss_and_grad(True)
    assert math.isfinite(mixed) and mixed == pytest.approx(reference, rel=tolerance)
    cosine = torch.nn.functional.cosine_similarity(mixed_grad.flatten(), reference_grad.flatten(), dim=0)
    assert cosine > 0.95, float(cosine)


def test_channels_last_gives_the_default_layout_outputs(train_config, device, no_tf32):
    plain, batch = _module_and_batch(train_config, device)
    fast, _ = _module_and_batch(train_config, device, "train.channels_last=true")
    fast.load_state_dict(plain.state_dict())
    convs = [m for m in fast.detector.model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1)]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    plain.eval(), fast.eval()
    with torch.no_grad():
        for expected, actual in zip(plain(batch["images"]), fast(batch["images"]), strict=True):
            torch.testing.assert_close(actual, expected, atol=1e-4, rtol=1e-4)
