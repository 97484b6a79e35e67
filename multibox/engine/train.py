"""A training run: data, module, Lightning trainer, checkpoints, logs and the final evaluation."""

from __future__ import annotations

import csv
import os
import time
import warnings
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only

from multibox.config import Config, save_config
from multibox.data.datamodule import DetectionDataModule
from multibox.data.records import DetectionSet
from multibox.data.stats import input_size_for
from multibox.devices import leave_a_core_free
from multibox.engine.anchors import auto_fit_anchors
from multibox.engine.callbacks import ProgressBar, training_callbacks
from multibox.engine.checkpoint import load_checkpoint
from multibox.engine.checkpoint_io import AtomicCheckpointIO, RandomStateCallback
from multibox.engine.evaluate import evaluate_val_set
from multibox.engine.interrupt import InterruptCallback, run_interruptible
from multibox.engine.module import DetectionModule, resolve_class_weights
from multibox.engine.tracking import build_loggers, check_tracking, finish_tracking
from multibox.errors import MultiboxError, TrainingInterrupted
from multibox.models.weights import resolve_pretrained_fallback
from multibox.outputs import writable_dir
from multibox.reporting.report import plot_training_curves, save_metrics_json, write_evaluation_report

_PRECISION: dict[str, Literal["32-true", "bf16-mixed", "16-mixed"]] = {
    "32": "32-true",
    "bf16-mixed": "bf16-mixed",
    "16-mixed": "16-mixed",
}


def checkpoint_dir(config: Config) -> Path:
    return Path(config.train.output_dir) / "checkpoints"


def find_resume_checkpoint(config: Config, resume: str | bool | None) -> str | None:
    """The checkpoint to resume from: the given path, or with ``--resume`` alone last.ckpt (else the newest).

    Without ``--resume``, train.resume decides: never (the default) refuses a directory that already holds
    checkpoints, so a one-off run never continues or overwrites another by accident; auto continues from it
    and starts fresh when there is none (a rerun of the same command continues, as MLCommons' SSD does, for
    scripted and preemptible jobs); must continues and fails when there is none. A SLURM job that SLURM
    requeued (SLURM_RESTART_COUNT > 0, e.g. after preemption) resumes as with auto.
    """
    folder = checkpoint_dir(config)
    existing = sorted(folder.glob("*.ckpt"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
    mode = config.train.resume
    if resume in (None, False) and int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0 and mode == "never":
        mode = "auto"
    if resume in (None, False):
        if mode == "must" and not existing:
            raise MultiboxError(f"train.resume=must: no checkpoint in {folder} to continue from")
        if mode in ("auto", "must") and existing:
            resume = True
        elif existing:
            raise MultiboxError(
                f"{folder} already holds checkpoints: pass --resume (or set train.resume=auto) to continue that run, "
                "or set another train.output_dir"
            )
        else:
            return None
    if resume is True:
        if not existing:
            raise MultiboxError(f"--resume: no checkpoint in {folder}")
        # last.ckpt is written every epoch (and every checkpoint_every_n_steps): it is the run's latest state.
        return str(folder / "last.ckpt") if (folder / "last.ckpt").is_file() else str(existing[-1])
    assert isinstance(resume, str)  # None/False returned or raised above, True handled
    path = Path(resume)
    if not path.is_file():
        raise MultiboxError(f"--resume: checkpoint {path} not found")
    return str(path)


def check_class_count(config: Config, data: DetectionDataModule) -> Config:
    """model.num_classes and loss.class_weights must agree with the data's classes before anything trains.

    A num_classes that differs is an error naming both counts, unless model.weights is given: then it is the
    count of those weights, whose class-specific head layers are re-initialised for the data's classes (warned).
    """
    found, source = data.num_classes, _data_source(config)
    asked = config.model.num_classes
    if asked is not None and asked != found:
        if config.model.weights is None:
            raise MultiboxError(
                f"model.num_classes is {asked} but {source} has {found} classes ({_names(data.class_names)}): "
                "remove model.num_classes to take the data's count, or fix the data"
            )
        warnings.warn(
            f"model.num_classes is {asked} (model.weights) but {source} has {found} classes: the head's "
            f"class layers are re-initialised for {found}",
            UserWarning,
            stacklevel=2,
        )
        config = config.model_copy(update={"model": config.model.model_copy(update={"num_classes": found})})
    weights = config.loss.class_weights
    if isinstance(weights, list) and len(weights) != found:
        raise MultiboxError(
            f"loss.class_weights has {len(weights)} values but {source} has {found} classes "
            f"({_names(data.class_names)})"
        )
    return config


def _data_source(config: Config) -> str:
    split = config.data.train
    return str(split.annotations or split.images) if split is not None else "the data"


def _names(names: list[str], shown: int = 8) -> str:
    return ", ".join(names[:shown]) + (f", ... ({len(names) - shown} more)" if len(names) > shown else "")


def _callbacks(config: Config, has_val: bool) -> list[L.Callback]:
    """last.ckpt every epoch (and every train.checkpoint_every_n_steps), best.ckpt by val mAP, the random
    states every checkpoint carries for exact resume, then what train.* asks for."""
    folder = checkpoint_dir(config)
    callbacks: list[L.Callback] = [
        RandomStateCallback(),
        ModelCheckpoint(
            dirpath=folder, filename="last", save_top_k=1, save_on_train_epoch_end=True, enable_version_counter=False
        ),
    ]
    if config.train.checkpoint_every_n_steps is not None:
        callbacks.append(
            ModelCheckpoint(
                dirpath=folder,
                filename="last",
                save_top_k=1,
                enable_version_counter=False,
                every_n_train_steps=config.train.checkpoint_every_n_steps,
            )
        )
    if has_val:
        callbacks.append(
            ModelCheckpoint(
                dirpath=folder,
                filename="best",
                monitor="val/map",
                mode="max",
                save_top_k=1,
                enable_version_counter=False,
            )
        )
    callbacks += training_callbacks(config)  # EMA (train.ema), throughput and GPU memory logging
    return callbacks


def resolve_strategy(config: Config) -> str:
    """``auto`` is DDP (gloo on the CPU, NCCL on GPUs) as soon as more than one device or node takes part."""
    train = config.train
    if train.strategy != "auto":
        return train.strategy
    devices = train.devices
    many = (isinstance(devices, int) and devices > 1) or (isinstance(devices, str) and devices.count(",") > 0)
    return "ddp" if many or train.num_nodes > 1 else "auto"


def build_trainer(config: Config, has_val: bool, extra_callbacks: list[L.Callback] | None = None) -> L.Trainer:
    """The Lightning trainer of a run; `extra_callbacks` come last (e.g. `multibox tune`'s pruning)."""
    out = Path(config.train.output_dir)
    return L.Trainer(
        max_epochs=config.train.epochs,
        accelerator=config.train.accelerator,
        devices=config.train.devices,
        num_nodes=config.train.num_nodes,
        strategy=resolve_strategy(config),
        precision=_PRECISION[config.train.precision],
        plugins=[AtomicCheckpointIO()],
        logger=build_loggers(config) or False,  # train.loggers: tensorboard, csv, mlflow, wandb
        callbacks=[*_callbacks(config, has_val), *(extra_callbacks or []), *_progress_bar(config)],
        gradient_clip_val=config.train.gradient_clip,
        log_every_n_steps=config.train.log_every_n_steps,
        check_val_every_n_epoch=config.eval.every_n_epochs,
        limit_val_batches=None if has_val else 0,
        num_sanity_val_steps=0,
        enable_progress_bar=config.train.progress,
        enable_model_summary=False,
        default_root_dir=out,
    )


def _progress_bar(config: Config) -> list[L.Callback]:
    """Lightning's rich bar with epochs counted from 1 and without v_num (see ProgressBar), when it is shown."""
    return [ProgressBar()] if config.train.progress else []


def read_metrics_csv(path: Path) -> list[dict[str, str]]:
    """The rows of a metrics.csv (none when there is no file)."""
    if not path.is_file():
        return []
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def prepend_metrics_history(path: Path, history: list[dict[str, str]]) -> None:
    """Put the interrupted run's rows back in front of a resumed run's metrics.csv.

    Rows the interrupted run logged after its checkpoint (the resumed run logs those steps again) are dropped.
    """
    rows = read_metrics_csv(path)
    first = min(((_number(r.get("epoch")), _number(r.get("step"))) for r in rows), default=(float("inf"), float("inf")))
    kept = [r for r in history if (_number(r.get("epoch")), _number(r.get("step"))) < first]
    fields = list(dict.fromkeys([*(history[0].keys() if history else []), *(rows[0].keys() if rows else [])]))
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(kept + rows)


def _number(text: str | None) -> float:
    return float(text) if text not in (None, "") else float("inf")


def limit_cpu_threads(config: Config) -> None:
    """Leave one core free when training on the CPU (the logger, progress bar and loader threads need it)."""
    on_cpu = config.train.accelerator == "cpu" or (config.train.accelerator == "auto" and not torch.cuda.is_available())
    if on_cpu:
        leave_a_core_free(torch.device("cpu"))


def _global_rank() -> int:
    """This process's rank before the trainer exists (Lightning reads RANK / LOCAL_RANK / SLURM_PROCID)."""
    # Lightning sets rank_zero_only.rank at import; its type (a function) does not declare the attribute.
    return rank_zero_only.rank  # type: ignore[attr-defined]


def resolve_input_size(config: Config, train_set: DetectionSet, show: bool = True) -> Config:
    """``data.input_short_side``: the input size that keeps the training images' median aspect ratio."""
    size = input_size_for(train_set, config.data.input_short_side or min(config.data.input_size))
    if show:
        print(
            f"data.input_size={size[0]},{size[1]} (H,W): shorter side {config.data.input_short_side}, "
            "the training images' median aspect ratio"
        )
    data = config.data.model_copy(update={"input_size": size, "input_short_side": None})
    return config.model_copy(update={"data": data})


def train(
    config: Config, resume: str | bool | None = None, extra_callbacks: list[L.Callback] | None = None
) -> dict[str, Any] | None:
    """Train as configured; returns the final COCO metrics on the val set (None without one, and on DDP ranks > 0).

    Under DDP every process runs this function (Lightning's launcher re-runs the command; torchrun
    and SLURM start them all), and each loads the data and builds the model before the trainer
    joins them into one job.
    """
    resume_path = find_resume_checkpoint(config, resume)
    writable_dir(config.train.output_dir, "training outputs")  # before the data is read, not after an epoch
    check_tracking(config)  # a missing logger package or an unreachable MLflow server: now, not after an epoch
    limit_cpu_threads(config)
    L.seed_everything(config.train.seed, workers=True, verbose=False)
    data = DetectionDataModule(config)
    data.check_files_present()  # a wrong or moved images folder stops here, not after an epoch of nothing
    config = check_class_count(config, data)
    if config.data.input_short_side is not None:  # input size from the data's aspect ratio, saved as such
        config = resolve_input_size(config, data.train_set, show=_global_rank() == 0)
        data.config = config
    model_config = resolve_pretrained_fallback(config.model)  # no ImageNet file: scratch, saved as such
    config = config.model_copy(update={"model": model_config})
    config = resolve_class_weights(config, data.train_set)  # loss.class_weights: auto -> numbers, saved as such
    if config.anchors.auto:  # scale-aware boxes fitted to the training set (`multibox anchors fit`), saved as such
        config = auto_fit_anchors(config, data.train_set, show=_global_rank() == 0)
    module = DetectionModule(config.to_dict(), data.class_names, data.category_ids)
    if config.data.tiles is not None:  # a crop smaller than one cell of the finest feature map sees nothing
        from multibox.engine.sliced import check_tile_for

        check_tile_for(config.data.tiles.size, module.detector, config.data.input_size, "data.tiles.size")
    has_val = data.val_set is not None
    if data.val_set is not None:
        module.val_ground_truth = data.val_set.to_coco_gt()
    out = Path(config.train.output_dir)
    if _global_rank() == 0:  # from RANK / LOCAL_RANK / SLURM_PROCID: every rank runs this function
        save_config(module.config, out / "config.yaml")
    started = time.perf_counter()
    interrupt = InterruptCallback(checkpoint_dir(config) / "last.ckpt")  # Ctrl-C / SIGTERM: checkpoint, then stop
    trainer = build_trainer(config, has_val, [interrupt, *(extra_callbacks or [])])
    history = read_metrics_csv(out / "metrics.csv") if resume_path else []  # CSVLogger deletes it on start
    try:
        run_interruptible(interrupt, trainer, lambda: trainer.fit(module, datamodule=data, ckpt_path=resume_path))
    except TrainingInterrupted:
        if history and trainer.is_global_zero:
            prepend_metrics_history(out / "metrics.csv", history)
        raise
    elapsed = time.perf_counter() - started
    if not trainer.is_global_zero:  # the other DDP ranks are done; rank 0 reports
        return None
    if history:
        prepend_metrics_history(out / "metrics.csv", history)
    if config.train.report and (out / "metrics.csv").is_file():
        plot_training_curves(out / "metrics.csv", out / "results.png")
    best = checkpoint_dir(config) / "best.ckpt"
    if not has_val:
        finish_tracking(trainer.loggers, out, None, checkpoint_dir(config) / "last.ckpt")
        return None
    assert data.val_set is not None and module.val_ground_truth is not None  # has_val
    loaded = load_checkpoint(best if best.is_file() else checkpoint_dir(config) / "last.ckpt", config)
    evaluation = evaluate_val_set(loaded.detector, data, config, module.val_ground_truth)
    metrics = evaluation.metrics
    metrics["train_seconds"] = round(elapsed, 1)
    save_metrics_json(metrics, out / "metrics.json")
    if config.train.report:
        write_evaluation_report(out, evaluation, data.val_set)  # report.md + pictures
    finish_tracking(trainer.loggers, out, metrics, best if best.is_file() else None)  # MLflow artifacts, W&B summary
    return metrics
