"""The LightningModule: training step, validation with COCO metrics, optimizer and schedule.

The model never sees the optimizer or the logger; this module is the glue. Its
hyper-parameters are the resolved config plus the dataset's class names and category
ids, so a checkpoint alone is enough to rebuild the detector for eval and predict.
"""

from __future__ import annotations

import warnings
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig
from torch import Tensor

from multibox.config import Config
from multibox.data.dataset import images_to_float, warn_skipped
from multibox.data.readable import check_skipped
from multibox.data.records import DetectionSet
from multibox.engine.schedules import lr_multiplier
from multibox.errors import MultiboxError
from multibox.losses import build_criterion, class_weights_from_counts, count_labels
from multibox.metrics.coco import METRIC_KEYS, DetectionAccumulator
from multibox.metrics.evaluation import score
from multibox.models.detector import build_detector, resolved_config


class DetectionModule(L.LightningModule):
    category_lookup: Tensor  # a buffer: label index -> COCO category id, on the module's device

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
        self.criterion = build_criterion(self.config, num_classes)
        self.register_buffer("category_lookup", torch.tensor([0, *category_ids], dtype=torch.long), persistent=False)
        self.val_ground_truth: dict | None = None  # COCO gt dict; set by whoever owns the val set
        self.accumulator = DetectionAccumulator()
        self.last_metrics: dict[str, Any] | None = None
        self.skipped_samples = {"train": 0, "val": 0}  # bad samples skipped so far by the loaders, per stage
        self._epoch_samples = {"train": [0, 0], "val": [0, 0]}  # this epoch's (skipped, seen) per stage
        self.skipped_nonfinite = 0  # training steps skipped for a non-finite loss (train.on_nan: skip)
        self._network_prepared = False

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        images = images_to_float(images)
        if self.config.train.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.detector(images)

    def setup(self, stage: str) -> None:
        """channels_last and compile once the trainer runs: after callbacks such as EMA copied the plain network."""
        self.prepare_network()

    def prepare_network(self) -> None:
        """Apply train.channels_last and train.compile to the network (once). ``nn.Module.compile``
        compiles in place, so parameter names, and with them checkpoints, stay as they are."""
        if self._network_prepared:
            return
        self._network_prepared = True
        if self.config.train.channels_last:
            self.detector.model.to(memory_format=torch.channels_last)
        if self.config.train.compile:
            self.detector.model.compile()

    def _losses(self, batch: dict[str, Tensor]) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        box_regression, cls_logits = self(batch["images"])
        losses = self.criterion(
            box_regression, cls_logits, self.detector.default_boxes, batch["boxes"], batch["labels"]
        )
        return losses, box_regression, cls_logits

    def _count_skipped(self, batch: dict[str, Any], stage: str) -> None:
        """Warn (once per file) about samples the loader skipped and log their sum over the epoch:
        ``data/skipped`` in training, ``data/val_skipped`` in validation."""
        skipped = batch.get("skipped")
        count = int(skipped) if skipped is not None else 0
        for message in batch.get("skipped_files", []) or []:
            warn_skipped(message)
        self.skipped_samples[stage] += count
        self._epoch_samples[stage][0] += count
        self._epoch_samples[stage][1] += count + int(batch["images"].shape[0])
        name = "data/skipped" if stage == "train" else "data/val_skipped"
        self.log(name, float(count), reduce_fx="sum", on_step=False, on_epoch=True, batch_size=1)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor | None:
        self._count_skipped(batch, "train")
        kept = batch["images"].shape[0]
        # Every sample skipped, or one left (BatchNorm cannot train on a single image's 1x1 maps,
        # which is why the loader drops a last batch of one): nothing to learn from on this rank.
        usable = not (kept == 0 or (kept == 1 and int(batch.get("skipped", 0)) > 0))
        if not usable and self.trainer.world_size == 1:
            return None  # Lightning skips the step
        # Under DDP the other ranks still all-reduce their gradients (and agree on finiteness below):
        # returning None here alone would leave them waiting forever. Take part with zero gradients.
        losses = self._losses(batch)[0] if usable else self._zero_losses()
        finite = self._check_finite(losses)
        self.log(
            "train/skipped_nonfinite", float(not finite), reduce_fx="sum", on_step=False, on_epoch=True, batch_size=1
        )
        if not finite:
            return None  # every rank skips backward and the update together
        if usable:
            self.log("train/loss", losses["loss"], prog_bar=True, batch_size=kept)
            self.log_dict(
                {"train/loss_bbox": losses["loss_bbox"], "train/loss_cls": losses["loss_cls"]},
                prog_bar=True,
                batch_size=kept,
            )
            self.log("train/num_positives", losses["num_positives"].float(), batch_size=kept)
            self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], prog_bar=True, batch_size=kept)
        return losses["loss"]

    def _zero_losses(self) -> dict[str, Tensor]:
        """A loss of exactly 0 that reaches every trainable parameter, so DDP's gradient all-reduce runs."""
        zero = sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0
        assert isinstance(zero, Tensor)  # a sum of tensors: the detector has trainable parameters
        return {
            "loss": zero,
            "loss_bbox": zero.detach(),
            "loss_cls": zero.detach(),
            "num_positives": torch.zeros((), dtype=torch.long, device=zero.device),
        }

    def _check_finite(self, losses: dict[str, Tensor]) -> bool:
        """False when the loss is NaN or infinite and train.on_nan is skip (warned, counted); raises when it is stop.

        Raising here, before backward and the optimizer step, leaves the weights, and so every
        checkpoint written afterwards by anyone, as they were after the last finite step.
        The check costs one host sync per step; under DDP the ranks agree (all stop or skip
        together), since a rank that skipped alone would leave the others waiting in all-reduce.
        """
        finite = bool(torch.isfinite(losses["loss"]).all())
        if self.trainer.strategy.reduce_boolean_decision(finite, all=True):
            return True
        where = f"epoch {self.current_epoch} step {self.global_step}"
        terms = f"loss_bbox={float(losses['loss_bbox']):.4g}, loss_cls={float(losses['loss_cls']):.4g}"
        if self.config.train.on_nan == "stop":
            raise MultiboxError(
                f"non-finite loss at {where} ({terms}); training stopped, checkpoints hold the last finite weights"
            )
        self.skipped_nonfinite += 1
        warnings.warn(
            f"non-finite loss at {where} ({terms}); step skipped (train.on_nan: skip)", RuntimeWarning, stacklevel=2
        )
        return False

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._count_skipped(batch, "val")
        if batch["images"].shape[0] == 0:
            return
        losses, box_regression, cls_logits = self._losses(batch)
        size = batch["images"].shape[0]
        # sync_dist: under DDP each rank sees its shard; the logged epoch value is the mean over all ranks.
        self.log("val/loss", losses["loss"], prog_bar=True, batch_size=size, sync_dist=True)
        self.log_dict(
            {"val/loss_bbox": losses["loss_bbox"], "val/loss_cls": losses["loss_cls"]}, batch_size=size, sync_dist=True
        )
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

    def on_train_epoch_start(self) -> None:
        self._epoch_samples["train"] = [0, 0]

    def on_train_epoch_end(self) -> None:
        if self.config.data.max_skipped_fraction < 1:  # 1: never stop for skipped images once training runs
            self._check_skipped("train")  # before the epoch's checkpoint is written (monitoring callbacks run after)

    def _check_skipped(self, stage: str) -> None:
        """Stop when the loaders skipped more than data.max_skipped_fraction of this epoch's images (all ranks
        together): files that are there but cannot be decoded, which the check before training cannot see."""
        counts = torch.tensor(self._epoch_samples[stage], dtype=torch.float64, device=self.device)
        skipped, total = (int(v) for v in self.trainer.strategy.reduce(counts, reduce_op="sum").tolist())
        split = self.config.data.train if stage == "train" or self.config.data.val is None else self.config.data.val
        source = str((split.annotations or split.images) if split is not None else "data")
        check_skipped(
            skipped,
            total,
            "training" if stage == "train" else "validation",
            source,
            self.config.data.max_skipped_fraction,
        )

    def on_validation_epoch_start(self) -> None:
        self.accumulator.reset()
        self._epoch_samples["val"] = [0, 0]

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking and self.config.data.max_skipped_fraction < 1:
            self._check_skipped("val")
        if not self._evaluating():
            return
        self.accumulator.gather()  # all ranks' detections, each image once
        assert self.val_ground_truth is not None  # _evaluating() says so
        # The same scoring as the final evaluation and `multibox eval`; unreadable images are left out.
        metrics = score(self.accumulator, self.val_ground_truth, self.class_names, self.config.eval.metric).metrics
        self.accumulator.reset()
        self.last_metrics = metrics
        self.log("val/map", float(metrics["map"]), prog_bar=True)
        self.log_dict({f"val/{key}": float(metrics[key]) for key in METRIC_KEYS if key != "map"})
        if "voc_map" in metrics:
            self.log("val/voc_map", float(metrics["voc_map"]))

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        opt = self.config.optimizer
        optimizer: torch.optim.Optimizer
        if opt.name == "sgd":
            optimizer = torch.optim.SGD(
                self.parameters(),
                lr=opt.lr,
                momentum=opt.momentum,
                nesterov=opt.nesterov,
                weight_decay=opt.weight_decay,
            )
        else:
            optimizer = torch.optim.AdamW(self.parameters(), lr=opt.lr, weight_decay=opt.weight_decay)
        total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        schedule = lr_multiplier(self.config, total_steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def resolve_class_weights(config: Config, train_set: DetectionSet) -> Config:
    """loss.class_weights: auto becomes the numbers of the training set's label counts (and is printed), so the
    module, the run's config.yaml and the checkpoint all hold the weights actually used. Other values pass through."""
    if config.loss.class_weights != "auto":
        return config
    weights = class_weights_from_counts(count_labels(train_set))
    _print_class_weights(train_set.class_names, weights)
    return config.model_copy(update={"loss": config.loss.model_copy(update={"class_weights": weights})})


@rank_zero_only
def _print_class_weights(class_names: list[str], weights: list[float]) -> None:
    print(
        "loss.class_weights (auto, from label counts): "
        + ", ".join(f"{n} {w:.3g}" for n, w in zip(class_names, weights, strict=True))
    )
