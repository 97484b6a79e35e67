"""Ctrl-C and SIGTERM during training: stop at the next batch boundary with a checkpoint to continue from.

What an interrupt keeps: the first SIGINT (Ctrl-C) or SIGTERM (what SLURM, Kubernetes and `docker stop` send
before killing) is noted; when the running training batch ends, ``last.ckpt`` is written with the state after
that batch (weights, optimizer, schedule, loop position, random states: the same as a
train.checkpoint_every_n_steps checkpoint) and training stops. A signal during validation lets the validation
and the epoch's own checkpoint finish first. A second Ctrl-C stops at once, keeping the last checkpoint written
before it. Lightning's own handling would exit with status 1 and no word (SIGINT) or only after the epoch (SIGTERM).
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L

from multibox.errors import TrainingInterrupted


class InterruptCallback(L.Callback):
    """Notes SIGINT/SIGTERM while installed (:meth:`install`) and stops training cleanly at the next batch end."""

    def __init__(self, checkpoint_path: Path):
        self.checkpoint_path = Path(checkpoint_path)
        self.received: str | None = None  # name of the first signal
        self.saved: Path | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        """Take over SIGINT and SIGTERM (main thread only: Python delivers signals there)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for number in (signal.SIGINT, signal.SIGTERM):
            self._previous[number] = signal.getsignal(number)
            signal.signal(number, self._handler)

    def uninstall(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def _handler(self, number: int, frame: FrameType | None) -> None:
        name = signal.Signals(number).name
        if self.received is not None:
            if number == signal.SIGINT:  # a second Ctrl-C: stop now
                raise KeyboardInterrupt
            return
        self.received = name
        print(
            f"\n{name} received: stopping after this batch and writing a checkpoint (Ctrl-C again to stop at once)",
            file=sys.stderr,
            flush=True,
        )

    def _requested(self, trainer: L.Trainer) -> bool:
        """Any rank received a signal (all ranks agree, so they stop together)."""
        return bool(trainer.strategy.reduce_boolean_decision(self.received is not None, all=False))

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not self._requested(trainer):
            return
        if trainer.global_step > 0:  # the state after this batch, as a checkpoint_every_n_steps checkpoint holds it
            trainer.save_checkpoint(self.checkpoint_path)
            self.saved = self.checkpoint_path
        raise self.error(trainer)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """A signal during validation: the epoch's checkpoint is written by now; stop before the next epoch."""
        if self._requested(trainer):
            raise self.error(trainer)

    def error(self, trainer: L.Trainer | None) -> TrainingInterrupted:
        epoch = trainer.current_epoch + 1 if trainer is not None else 0
        step = trainer.global_step if trainer is not None else 0
        saved = self.saved or (self.checkpoint_path if self.checkpoint_path.is_file() else None)
        return TrainingInterrupted(self.received or "SIGINT", epoch, step, str(saved) if saved else None)


def run_interruptible(callback: InterruptCallback, trainer: L.Trainer, fit: Callable[[], None]) -> None:
    """Run `fit` with the signals routed to `callback`; any way training ends after a signal (our stop, Lightning's
    SIGTERM exit, a second Ctrl-C, a loader worker killed by the same Ctrl-C) becomes one TrainingInterrupted."""
    callback.install()
    try:
        fit()
    except TrainingInterrupted:
        raise
    except BaseException as error:
        if callback.received is None and not isinstance(error, KeyboardInterrupt):
            raise
        callback.received = callback.received or "SIGINT"
        raise callback.error(trainer) from None
    finally:
        callback.uninstall()
    if callback.received is not None:  # the signal came after the last batch: training is complete, say so anyway
        raise callback.error(trainer)
