"""A training run: data, module, Lightning trainer, checkpoints, logs and the final evaluation."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from multibox.config import Config, save_config
from multibox.data.datamodule import DetectionDataModule
from multibox.engine.checkpoint import load_checkpoint
from multibox.engine.evaluate import evaluate_detector, pick_device
from multibox.engine.module import DetectionModule
from multibox.engine.report import plot_training_curves, save_metrics_json
from multibox.errors import MultiboxError

_PRECISION = {"32": "32-true", "bf16-mixed": "bf16-mixed", "16-mixed": "16-mixed"}


def checkpoint_dir(config: Config) -> Path:
    return Path(config.train.output_dir) / "checkpoints"


def find_resume_checkpoint(config: Config, resume: str | bool | None) -> str | None:
    """The checkpoint to resume from: the given path, or with ``--resume`` alone the newest in output_dir.

    A new run never writes into a directory that already holds checkpoints.
    """
    folder = checkpoint_dir(config)
    existing = sorted(folder.glob("*.ckpt"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
    if resume in (None, False):
        if existing:
            raise MultiboxError(
                f"{folder} already holds checkpoints: pass --resume to continue that run, or set another train.output_dir"
            )
        return None
    if resume is True:
        if not existing:
            raise MultiboxError(f"--resume: no checkpoint in {folder}")
        return str(existing[-1])
    path = Path(resume)
    if not path.is_file():
        raise MultiboxError(f"--resume: checkpoint {path} not found")
    return str(path)


def _callbacks(config: Config, has_val: bool) -> list[L.Callback]:
    folder = checkpoint_dir(config)
    callbacks: list[L.Callback] = [
        ModelCheckpoint(dirpath=folder, filename="last", save_top_k=1, save_on_train_epoch_end=True, enable_version_counter=False)
    ]
    if has_val:
        callbacks.append(
            ModelCheckpoint(dirpath=folder, filename="best", monitor="val/map", mode="max", save_top_k=1, enable_version_counter=False)
        )
    return callbacks


def build_trainer(config: Config, has_val: bool) -> L.Trainer:
    out = Path(config.train.output_dir)
    return L.Trainer(
        max_epochs=config.train.epochs,
        accelerator=config.train.accelerator,
        devices=config.train.devices,
        precision=_PRECISION[config.train.precision],
        logger=[CSVLogger(out, name="", version=""), TensorBoardLogger(out, name="", version="tensorboard")],
        callbacks=_callbacks(config, has_val),
        gradient_clip_val=config.train.gradient_clip,
        log_every_n_steps=config.train.log_every_n_steps,
        check_val_every_n_epoch=config.eval.every_n_epochs,
        limit_val_batches=None if has_val else 0,
        num_sanity_val_steps=0,
        enable_progress_bar=config.train.progress,
        enable_model_summary=False,
        default_root_dir=out,
    )


def limit_cpu_threads(config: Config) -> None:
    """Leave one core free when training on the CPU.

    PyTorch's OpenMP threads spin while they wait for each other; when the logger,
    progress bar or loader threads take a core from them, every op stalls (measured on
    the 2-core dev machine: 6 s per step with 2 threads, 0.5 s with 1). OMP_NUM_THREADS wins.
    """
    on_cpu = config.train.accelerator == "cpu" or (config.train.accelerator == "auto" and not torch.cuda.is_available())
    if on_cpu and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))


def train(config: Config, resume: str | bool | None = None) -> dict[str, Any] | None:
    """Train as configured; returns the final COCO metrics on the val set (None without one)."""
    resume_path = find_resume_checkpoint(config, resume)
    limit_cpu_threads(config)
    L.seed_everything(config.train.seed, workers=True, verbose=False)
    data = DetectionDataModule(config)
    module = DetectionModule(config.to_dict(), data.class_names, data.category_ids)
    has_val = data.val_set is not None
    if has_val:
        module.val_ground_truth = data.val_set.to_coco_gt()
    out = Path(config.train.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(module.config, out / "config.yaml")
    started = time.perf_counter()
    trainer = build_trainer(config, has_val)
    trainer.fit(module, datamodule=data, ckpt_path=resume_path)
    elapsed = time.perf_counter() - started
    if (out / "metrics.csv").is_file():
        plot_training_curves(out / "metrics.csv", out / "results.png")
    if not has_val:
        return None
    best = checkpoint_dir(config) / "best.ckpt"
    loaded = load_checkpoint(best if best.is_file() else checkpoint_dir(config) / "last.ckpt", config)
    metrics = evaluate_detector(
        loaded.detector, data.val_dataloader(), module.val_ground_truth, data.category_ids, data.class_names,
        pick_device(config.train.accelerator), progress=config.train.progress,
    )
    metrics["train_seconds"] = round(elapsed, 1)
    save_metrics_json(metrics, out / "metrics.json")
    return metrics
