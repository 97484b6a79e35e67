"""Training callbacks chosen by the config: weight EMA, throughput and GPU memory logging.

`training_callbacks(config)` is what the trainer adds besides its checkpoints; each callback
only observes the run (or, for EMA, swaps in averaged weights), so the module stays unaware.
"""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging, RichProgressBar

from multibox.config import Config


class ThroughputLogger(L.Callback):
    """Logs ``train/images_per_s`` at every logging step (over the images since the previous one) and per
    epoch (training batches only: the clock stops at the last batch, before validation), and on CUDA
    ``gpu/max_memory_gb``, the peak memory PyTorch allocated so far on the device (GB = 1e9 bytes).

    Timing reads the host clock without synchronising the GPU: over a logging interval the queue of
    pending kernels is short next to the interval, and the loss logging syncs anyway.
    """

    def __init__(self) -> None:
        self._epoch_start = self._window_start = self._last_batch_end = 0.0
        self._epoch_images = self._window_images = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start = self._window_start = self._last_batch_end = time.perf_counter()
        self._epoch_images = self._window_images = 0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        images = int(batch["images"].shape[0])
        self._epoch_images += images
        self._window_images += images
        self._last_batch_end = now = time.perf_counter()
        # Lightning's LoggerConnector sets log_every_n_steps on the Trainer without declaring it.
        if trainer.global_step % trainer.log_every_n_steps != 0:  # type: ignore[attr-defined]
            return
        rate = self._window_images / max(now - self._window_start, 1e-9)
        pl_module.log("train/images_per_s", rate, on_step=True, on_epoch=False, batch_size=1)
        self._log_memory(pl_module, on_step=True)
        self._window_start, self._window_images = now, 0

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._epoch_images == 0:
            return
        rate = self._epoch_images / max(self._last_batch_end - self._epoch_start, 1e-9)
        pl_module.log("train/images_per_s", rate, on_step=False, on_epoch=True, batch_size=1)
        self._log_memory(pl_module, on_step=False)

    @staticmethod
    def _log_memory(pl_module: L.LightningModule, on_step: bool) -> None:
        if pl_module.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(pl_module.device) / 1e9
            pl_module.log("gpu/max_memory_gb", peak, on_step=on_step, on_epoch=not on_step, batch_size=1)


class ProgressBar(RichProgressBar):
    """Lightning's rich bar, counting epochs from 1 (``Epoch 1/1`` for a one-epoch run, not ``Epoch 0/0``) and
    without ``v_num`` (the logger's version: here the last characters of the "tensorboard" folder name)."""

    def _get_train_description(self, current_epoch: int) -> str:
        text = f"Epoch {current_epoch + 1}"
        if self.trainer.max_epochs is not None and self.trainer.max_epochs > 0:
            text += f"/{self.trainer.max_epochs}"
        if len(self.validation_description) > len(text):  # as Lightning pads it, so the bars do not flicker
            text = f"{text:{len(self.validation_description)}}"
        return text

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items


def training_callbacks(config: Config) -> list[L.Callback]:
    """The callbacks train.* asks for: EMA of the weights (validation and checkpoints then use the
    averaged weights; the raw ones travel in the checkpoint for resuming), and throughput/memory logging."""
    callbacks: list[L.Callback] = [ThroughputLogger()]
    if config.train.ema:
        callbacks.append(EMAWeightAveraging(decay=config.train.ema_decay))
    return callbacks
