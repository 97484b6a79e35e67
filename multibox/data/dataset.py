"""Torch dataset over a :class:`DetectionSet`, and the collate function that pads boxes per batch.

Targets carry boxes normalised to [0, 1] of the network input, so the model and the
default-box matcher never need to know the input size or the original image size.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset, get_worker_info

from multibox.data.records import DetectionSet
from multibox.errors import MultiboxError

Transform = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


def read_image(path: Path, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """RGB uint8 (H, W, 3) as stored (EXIF orientation ignored, as COCO annotations are)."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        raise MultiboxError(f"{path}: cannot read image (missing, unreadable or not an image)")
    if expected_size is not None and image.shape[:2] != tuple(expected_size):
        (h, w), (eh, ew) = image.shape[:2], expected_size
        raise MultiboxError(f"{path}: image is {w}x{h} but its annotations say {ew}x{eh}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class DetectionDataset(Dataset):
    """Items are (image uint8 (3, H, W), target dict); crowd boxes are left out of the targets.

    target: ``boxes`` float32 (G, 4) xyxy in [0, 1] of the input, ``labels`` int64 (G,),
    ``image_id`` int and ``orig_size`` (height, width) of the original image.
    """

    def __init__(self, dataset: DetectionSet, transform: Transform, input_size: tuple[int, int]):
        self.dataset = dataset
        self.transform = transform
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self._seeded_pid: int | None = None

    def __len__(self) -> int:
        return len(self.dataset.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        self._seed_process()
        record = self.dataset.records[index]
        image = read_image(record.file, (record.height, record.width))
        keep = ~record.iscrowd
        image, boxes, labels = self.transform(image, record.boxes[keep], record.labels[keep])
        height, width = image.shape[:2]
        if (height, width) != self.input_size:
            raise ValueError(f"transform returned a {height}x{width} image, expected {self.input_size}")
        scale = np.array([width, height, width, height], np.float32)
        boxes = np.clip(np.asarray(boxes, np.float32).reshape(-1, 4) / scale, 0.0, 1.0)
        target = {
            "boxes": torch.from_numpy(boxes),
            "labels": torch.from_numpy(np.asarray(labels, np.int64).reshape(-1)),
            "image_id": int(record.image_id),
            "orig_size": (int(record.height), int(record.width)),
        }
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))), target

    def _seed_process(self) -> None:
        """Give each process (main or loader worker) its own augmentation stream, from torch's seed.

        Forked workers would otherwise inherit identical random states and augment alike;
        torch's per-worker seed also makes runs repeatable under a fixed global seed.
        """
        if self._seeded_pid == os.getpid():
            return
        self._seeded_pid = os.getpid()
        if get_worker_info() is not None:
            cv2.setNumThreads(1)  # workers are the parallelism; avoid oversubscribing the cores
        reseed = getattr(self.transform, "reseed", None)
        if callable(reseed):
            reseed(torch.initial_seed() % 2**63)


def collate_detections(batch: list[tuple[torch.Tensor, dict[str, Any]]]) -> dict[str, torch.Tensor]:
    """Stack images and zero-pad boxes/labels to the batch's most boxes (at least 1; label 0 = padding)."""
    images, targets = zip(*batch)
    boxes = pad_sequence([t["boxes"].reshape(-1, 4) for t in targets], batch_first=True)
    labels = pad_sequence([t["labels"].reshape(-1) for t in targets], batch_first=True)
    if boxes.shape[1] == 0:
        boxes, labels = boxes.new_zeros(len(batch), 1, 4), labels.new_zeros(len(batch), 1)
    return {
        "images": torch.stack(images),
        "boxes": boxes.float(),
        "labels": labels.long(),
        "image_ids": torch.tensor([t["image_id"] for t in targets], dtype=torch.int64),
        "orig_sizes": torch.tensor([t["orig_size"] for t in targets], dtype=torch.int64).reshape(-1, 2),
    }
