"""Lightning data module: loads the splits from the config and serves the loaders.

Annotations are loaded in ``__init__`` (they are small next to the images), because the
model is built from the classes before the trainer starts and the COCO evaluator needs the
validation ground truth.
"""

from __future__ import annotations

import logging
import os
import random
from functools import partial
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from multibox.config import Config, DataConfig, SplitPaths
from multibox.data.dataset import DetectionDataset, collate_detections
from multibox.data.formats.coco import load_coco
from multibox.data.gpu_decode import EncodedDetectionDataset, build_gpu_transform, collate_encoded, decode_batch
from multibox.data.readable import check_files_present
from multibox.data.records import DetectionSet
from multibox.data.transforms import build_eval_transform, build_train_transform
from multibox.errors import MultiboxError

log = logging.getLogger(__name__)


def _check_train_boxes(train_set: DetectionSet, val_set: DetectionSet | None, data: DataConfig) -> None:
    """A training set without a single box teaches only "background": an error, or a warning when the val
    set has boxes (a deliberate negatives-only run can still be scored). Names the annotation file."""
    if train_set.num_boxes:
        return
    where = data.train.annotations or data.train.images if data.train is not None else "data.train"
    message = f"{where}: the training set's {len(train_set)} images have no boxes at all"
    if val_set is None or not val_set.num_boxes:
        raise MultiboxError(f"{message} (wrong annotation file, or every box filtered out?)")
    log.warning("warning: %s; training only on background", message)


def load_split(split: SplitPaths, name: str, data_format: str = "coco", data: DataConfig | None = None) -> DetectionSet:
    """Load one split of the config (`name` is "train" or "val", for messages); `data` gives the per-format options."""
    if data_format == "coco":
        if split.annotations is None:
            raise MultiboxError(f"config: data.{name}.annotations is required for data.format=coco")
        return load_coco(split.images, split.annotations)
    if data_format in ("txt",) and split.annotations is None:
        raise MultiboxError(f"config: data.{name}.annotations is required for data.format={data_format}")
    from multibox.data.formats import load_dataset

    data = data if data is not None else DataConfig()
    return load_dataset(
        data_format,
        split.images,
        split.annotations,
        class_names=data.class_names,
        classes=data.classes,
        cognata=data.cognata.model_dump(),
        split=name,
    )


class DetectionDataModule(L.LightningDataModule):
    """Train/val loaders of a config; `class_names`, `category_ids`, `num_classes`, `val_set` are set in __init__."""

    def __init__(self, config: Config, evaluation_only: bool = False):
        """`evaluation_only` (multibox eval): with a data.val, only that split is read; data.train may be absent."""
        super().__init__()
        self.config = config
        data = config.data
        self._train_dataset: DetectionDataset | None = None
        self._augment_state: dict[str, Any] | None = None  # from a checkpoint, applied when the loader is built
        self._gpu_transforms: dict[bool, Any] = {}  # data.decode=gpu: torchvision v2 transforms, by train/eval
        self.val_set: DetectionSet | None = None
        if evaluation_only and data.val is not None:
            self.val_set = load_split(data.val, "val", data.format, data)
            self.class_names, self.category_ids = list(self.val_set.class_names), list(self.val_set.category_ids)
            self.num_classes = self.val_set.num_classes
            return
        if data.train is None:
            needed = "data.val (or data.train with data.val_split)" if evaluation_only else "data.train"
            raise MultiboxError(f"config: {needed} is required for {'evaluation' if evaluation_only else 'training'}")
        self.train_set = load_split(data.train, "train", data.format, data)
        if not len(self.train_set):
            raise MultiboxError(f"{data.train.annotations or data.train.images}: the training set has no images")
        if data.val is not None:
            self.val_set = load_split(data.val, "val", data.format, data)
            if self.val_set.category_ids != self.train_set.category_ids:
                raise MultiboxError(
                    f"{data.val.annotations}: categories differ from those of data.train ({data.train.annotations})"
                )
        elif data.val_split > 0:
            if len(self.train_set) < 2:
                raise MultiboxError(f"{data.train.annotations}: data.val_split needs at least 2 training images")
            self.train_set, self.val_set = self.train_set.split(data.val_split, data.split_seed)
        _check_train_boxes(self.train_set, self.val_set, data)
        self.class_names = list(self.train_set.class_names)
        self.category_ids = list(self.train_set.category_ids)
        self.num_classes = self.train_set.num_classes

    def check_files_present(self) -> None:
        """Before training: stop when most image files of a split are missing (data.max_skipped_fraction)."""
        data, bound = self.config.data, self.config.data.max_skipped_fraction
        assert data.train is not None
        check_files_present(self.train_set, "training", str(data.train.annotations or data.train.images), bound)
        if self.val_set is not None:
            split = data.val if data.val is not None else data.train
            check_files_present(self.val_set, "validation", str(split.annotations or split.images), bound)

    def train_dataloader(self) -> DataLoader:
        data = self.config.data
        if data.decode == "gpu":  # decoded and augmented after transfer (on_after_batch_transfer)
            encoded = EncodedDetectionDataset(self.train_set)
            return self._loader(
                encoded, shuffle=True, drop_last=len(encoded) > data.batch_size, persistent=False, train=True
            )
        transform: Any = build_train_transform(data.augment, data.input_size)
        if data.tiles is not None:  # crop first, then augment and resize (multibox.data.tiles)
            from multibox.data.tiles import TileCrop

            transform = TileCrop(data.tiles, transform)
        dataset = DetectionDataset(
            self.train_set, transform, data.input_size, skip_bad=True, max_pixels=data.max_image_pixels
        )
        if self._augment_state is not None:
            _restore_augment_state(dataset, self._augment_state)
        self._train_dataset = dataset
        # A last batch of one image would break BatchNorm on SSDLite's 1x1 maps: drop the remainder
        # (it is a different remainder every epoch, since the order is shuffled).
        # Train workers start afresh each epoch, seeded from torch's generator (which checkpoints
        # carry): persistent ones would carry their augmentation streams across epochs, and a
        # resumed run could not continue them.
        return self._loader(dataset, shuffle=True, drop_last=len(dataset) > data.batch_size, persistent=False)

    def state_dict(self) -> dict[str, Any]:
        """The main process's augmentation stream (it augments when data.num_workers is 0), for exact resume."""
        if self._train_dataset is None or self.config.data.num_workers > 0 or self.config.data.decode == "gpu":
            return {}  # data.decode=gpu augments from torch's global generator
        transform: Any = self._train_dataset.transform  # a DetectionTransform, or a TileCrop around one
        compose = transform.compose
        return {
            "augment_numpy": compose.random_generator.bit_generator.state,
            "augment_python": compose.py_random.getstate(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict:
            self._augment_state = state_dict

    def val_dataloader(self) -> DataLoader | list:
        """The val loader, or [] (no validation) when there is no val set."""
        if self.val_set is None or not len(self.val_set):
            return []
        data = self.config.data
        if data.decode == "gpu":
            return self._loader(EncodedDetectionDataset(self.val_set), shuffle=False, drop_last=False, train=False)
        dataset = DetectionDataset(
            self.val_set,
            build_eval_transform(data.input_size),
            data.input_size,
            skip_bad=True,
            max_pixels=data.max_image_pixels,
        )
        return self._loader(dataset, shuffle=False, drop_last=False)

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """data.decode=gpu: the encoded bytes stay on the CPU (decode_jpeg reads its input there, any device)."""
        if isinstance(batch, dict) and "encoded" in batch:
            rest = {key: value for key, value in batch.items() if key != "encoded"}
            return {**super().transfer_batch_to_device(rest, device, dataloader_idx), "encoded": batch["encoded"]}
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """data.decode=gpu: decode and augment the transferred batch on its device (see multibox.data.gpu_decode)."""
        if not (isinstance(batch, dict) and "encoded" in batch):
            return batch
        train, data = bool(batch["train"]), self.config.data
        if train not in self._gpu_transforms:
            preset = data.augment if train else "none"
            assert isinstance(preset, str)  # data.decode=gpu takes only presets (DataConfig._decode_preset)
            self._gpu_transforms[train] = build_gpu_transform(preset, data.input_size, train)
        return decode_batch(batch, self._gpu_transforms[train], data.input_size, batch["image_ids"].device)

    def prepare_batch(self, batch: dict[str, Any], device: torch.device | str) -> dict[str, Any]:
        """A loader batch moved to `device` and made ready for the model, for loops outside the Trainer
        (with data.decode=gpu the loaders' batches are still encoded)."""
        device = torch.device(device)
        return self.on_after_batch_transfer(self.transfer_batch_to_device(batch, device, 0), 0)

    def _loader(
        self,
        dataset: DetectionDataset | EncodedDetectionDataset,
        shuffle: bool,
        drop_last: bool,
        persistent: bool = True,
        train: bool = False,
    ) -> DataLoader:
        workers = self.config.data.num_workers
        if workers > 0:
            import cv2

            cv2.setNumThreads(1)  # inherited by the forked workers (see DetectionDataset._seed_process)
        return DataLoader(
            dataset,
            batch_size=self.config.data.batch_size,
            shuffle=shuffle,
            num_workers=workers,
            # Bad samples (unreadable image, invalid boxes) are skipped and counted, not fatal.
            collate_fn=partial(collate_encoded, train=train)
            if isinstance(dataset, EncodedDetectionDataset)
            else partial(collate_detections, input_size=self.config.data.input_size),
            persistent_workers=persistent and workers > 0,
            pin_memory=torch.cuda.is_available(),
            drop_last=drop_last,
        )


def _restore_augment_state(dataset: DetectionDataset, state: dict[str, Any]) -> None:
    """Continue a checkpoint's main-process augmentation stream instead of reseeding from torch's seed."""
    generator = np.random.Generator(np.random.PCG64())
    generator.bit_generator.state = state["augment_numpy"]
    py_random = random.Random()
    version, internal, gauss = state["augment_python"]
    py_random.setstate((version, tuple(internal), gauss))
    transform: Any = dataset.transform  # a DetectionTransform, or a TileCrop around one: both expose .compose
    transform.compose.set_random_state(generator, py_random)
    dataset._seeded_pid = os.getpid()  # this process's stream is set: DetectionDataset must not reseed it
