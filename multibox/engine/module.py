"""The LightningModule: training step, validation with COCO metrics, optimizer and schedule.

The model never sees the optimizer or the logger; this module is the glue. Its
hyper-parameters are the resolved config plus the dataset's class names and category
ids, so a checkpoint alone is enough to rebuild the detector for eval and predict.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import Tensor

from multibox.config import Config
from multibox.data.dataset import warn_skipped
from multibox.engine.evaluation import METRIC_KEYS, DetectionAccumulator, coco_evaluate
from multibox.losses import FocalLoss, MultiBoxLoss
from multibox.models.detector import build_detector, resolved_config


def images_to_float(images: Tensor) -> Tensor:
    """uint8 (N, 3, H, W) batches travel to the device as bytes and become [0, 1] floats there."""
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images


class DetectionModule(L.LightningModule):
    def __init__(self, config: dict[str, Any], class_names: list[str], category_ids: list[int]) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.config = Config.model_validate(config)
        self.class_names = list(class_names)
        num_classes = len(class_names)
        self.detector, self.spec = build_detector(self.config, num_classes)
        # The checkpoint carries the anchors and class count actually used, not just what was asked for.
        self.config = resolved_config(self.config, self.spec, num_classes)
        self.hparams["config"] = self.config.to_dict()
        loss = self.config.loss
        if loss.name == "focal":  # the detector's postprocess then scores with sigmoids (build_detector)
            self.criterion = FocalLoss(
                num_classes + 1, loss.focal_alpha, loss.focal_gamma, loss.iou_threshold, loss.class_weights,
                loss.bbox_weight, loss.cls_weight,
            )
        else:
            self.criterion = MultiBoxLoss(
                num_classes + 1, loss.neg_pos_ratio, loss.iou_threshold, loss.class_weights, loss.bbox_weight, loss.cls_weight
            )
        self.register_buffer("category_lookup", torch.tensor([0, *category_ids], dtype=torch.long), persistent=False)
        self.val_ground_truth: dict | None = None  # COCO gt dict; set by whoever owns the val set
        self.accumulator = DetectionAccumulator()
        self.last_metrics: dict[str, Any] | None = None
        self.skipped_samples = {"train": 0, "val": 0}  # bad samples skipped so far by the loaders, per stage

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        return self.detector(images_to_float(images))

    def _losses(self, batch: dict[str, Tensor]) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        box_regression, cls_logits = self(batch["images"])
        losses = self.criterion(box_regression, cls_logits, self.detector.default_boxes, batch["boxes"], batch["labels"])
        return losses, box_regression, cls_logits

    def _count_skipped(self, batch: dict[str, Any], stage: str) -> None:
        """Warn (once per file) about samples the loader skipped and log their sum over the epoch:
        ``data/skipped`` in training, ``data/val_skipped`` in validation."""
        skipped = batch.get("skipped")
        count = int(skipped) if skipped is not None else 0
        for message in batch.get("skipped_files", []) or []:
            warn_skipped(message)
        self.skipped_samples[stage] += count
        name = "data/skipped" if stage == "train" else "data/val_skipped"
        self.log(name, float(count), reduce_fx="sum", on_step=False, on_epoch=True, batch_size=1)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor | None:
        self._count_skipped(batch, "train")
        kept = batch["images"].shape[0]
        if kept == 0 or (kept == 1 and int(batch.get("skipped", 0)) > 0):
            # Every sample skipped, or one left (BatchNorm cannot train on a single image's 1x1
            # maps, which is why the loader drops a last batch of one): Lightning skips the step.
            return None
        losses, _, _ = self._losses(batch)
        size = batch["images"].shape[0]
        self.log("train/loss", losses["loss"], prog_bar=True, batch_size=size)
        self.log_dict({"train/loss_bbox": losses["loss_bbox"], "train/loss_cls": losses["loss_cls"]}, batch_size=size)
        self.log("lr", self.optimizers().param_groups[0]["lr"], prog_bar=True, batch_size=size)
        return losses["loss"]

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._count_skipped(batch, "val")
        if batch["images"].shape[0] == 0:
            return
        losses, box_regression, cls_logits = self._losses(batch)
        self.log("val/loss", losses["loss"], prog_bar=True, batch_size=batch["images"].shape[0])
        if self._evaluating():
            detections = self.detector.postprocess(box_regression, cls_logits, batch["orig_sizes"])
            self.accumulator.add(
                batch["image_ids"],
                [d["boxes"] for d in detections],
                [d["scores"] for d in detections],
                [self.category_lookup[d["labels"]] for d in detections],
            )

    def _evaluating(self) -> bool:
        """COCO metrics at every validation (the trainer runs it every eval.every_n_epochs), not in sanity checks."""
        return self.val_ground_truth is not None and not self.trainer.sanity_checking

    def on_validation_epoch_start(self) -> None:
        self.accumulator.reset()

    def on_validation_epoch_end(self) -> None:
        if not self._evaluating():
            return
        self.accumulator.gather()  # all ranks' detections, each image once
        metrics = coco_evaluate(self.val_ground_truth, self.accumulator.results(), self.class_names)
        self.accumulator.reset()
        self.last_metrics = metrics
        self.log("val/map", float(metrics["map"]), prog_bar=True)
        self.log_dict({f"val/{key}": float(metrics[key]) for key in METRIC_KEYS if key != "map"})

    def configure_optimizers(self) -> dict[str, Any]:
        opt = self.config.optimizer
        if opt.name == "sgd":
            optimizer = torch.optim.SGD(
                self.parameters(), lr=opt.lr, momentum=opt.momentum, nesterov=opt.nesterov, weight_decay=opt.weight_decay
            )
        else:
            optimizer = torch.optim.AdamW(self.parameters(), lr=opt.lr, weight_decay=opt.weight_decay)
        total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        schedule = lr_multiplier(self.config, total_steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def lr_multiplier(config: Config, total_steps: int):
    """Per-step multiplier of the base rate: linear warmup, then multistep, cosine or constant."""
    sched = config.scheduler
    steps_per_epoch = total_steps / config.train.epochs
    milestones = [round(m * steps_per_epoch) for m in sched.milestones]
    warmup = min(sched.warmup_steps, total_steps)

    def multiplier(step: int) -> float:
        if step < warmup:
            alpha = step / warmup
            warm = sched.warmup_factor * (1 - alpha) + alpha
        else:
            warm = 1.0
        if sched.name == "multistep":
            return warm * sched.gamma ** sum(step >= m for m in milestones)
        if sched.name == "cosine":
            progress = min(1.0, step / total_steps)
            return warm * (sched.min_lr_ratio + (1 - sched.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
        return warm

    return multiplier
