"""In-memory detection annotations: one record per image, one set per split.

Every loader (COCO today) produces a :class:`DetectionSet`, so datasets, splitting and
COCO evaluation depend on this one format instead of on the file format. Labels are
contiguous (1..K, 0 is background) because the classifier head needs them so; the
original category ids are kept to report results in the dataset's own ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch


@dataclass
class ImageRecord:
    """One image and its ground truth, boxes xyxy in the original image's pixels."""

    image_id: int
    file: Path
    width: int
    height: int
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    iscrowd: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    areas: np.ndarray | None = None

    def __post_init__(self) -> None:
        # Normalise dtypes and shapes once, so consumers never have to.
        self.file = Path(self.file)
        self.boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        self.labels = np.asarray(self.labels, np.int64).reshape(-1)
        self.iscrowd = np.asarray(self.iscrowd, bool).reshape(-1)
        if self.areas is None:
            self.areas = box_areas(self.boxes)
        self.areas = np.asarray(self.areas, np.float32).reshape(-1)
        count = len(self.boxes)
        if not (len(self.labels) == len(self.iscrowd) == len(self.areas) == count):
            raise ValueError(f"image {self.image_id}: boxes, labels, iscrowd and areas differ in length")

    @property
    def num_boxes(self) -> int:
        return len(self.boxes)


def box_areas(boxes: np.ndarray) -> np.ndarray:
    """Areas of xyxy boxes (float32)."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    return ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).astype(np.float32)


@dataclass
class DetectionSet:
    """A split: its image records plus the label <-> category mapping shared by all splits."""

    records: list[ImageRecord]
    class_names: list[str]
    category_ids: list[int]

    def __post_init__(self) -> None:
        if len(self.class_names) != len(self.category_ids):
            raise ValueError("class_names and category_ids differ in length")

    def __len__(self) -> int:
        return len(self.records)

    @property
    def num_classes(self) -> int:
        """Foreground classes K (labels run 1..K)."""
        return len(self.class_names)

    @property
    def num_boxes(self) -> int:
        return sum(record.num_boxes for record in self.records)

    def subset(self, indices: Sequence[int] | np.ndarray) -> DetectionSet:
        """The records at `indices` (in that order), with the same classes."""
        return DetectionSet(
            records=[self.records[int(i)] for i in np.asarray(indices, np.int64).reshape(-1)],
            class_names=list(self.class_names),
            category_ids=list(self.category_ids),
        )

    def split(self, fraction: float, seed: int) -> tuple[DetectionSet, DetectionSet]:
        """Seeded random hold-out: (train, val) where val has round(fraction * n) images.

        Val gets at least one image when fraction > 0 and there are two or more images, and
        train always keeps at least one. Both keep the original order of the records.
        """
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"split fraction must be in [0, 1), got {fraction}")
        n = len(self.records)
        n_val = int(round(fraction * n))
        if fraction > 0 and n > 1:
            n_val = min(max(n_val, 1), n - 1)
        order = np.random.default_rng(seed).permutation(n)
        return self.subset(np.sort(order[n_val:])), self.subset(np.sort(order[:n_val]))

    def category_id_of(self, labels: np.ndarray | torch.Tensor) -> np.ndarray:
        """Original dataset category ids of contiguous labels 1..K (same shape, int64)."""
        if isinstance(labels, torch.Tensor):
            labels = labels.detach().cpu().numpy()
        labels = np.asarray(labels, np.int64)
        if labels.size and (labels.min() < 1 or labels.max() > self.num_classes):
            raise ValueError(f"labels must be in 1..{self.num_classes}, got {labels.min()}..{labels.max()}")
        return np.asarray(self.category_ids, np.int64).reshape(-1)[labels - 1] if labels.size else labels.copy()

    def to_coco_gt(self) -> dict[str, Any]:
        """COCO instances dict of this split (original category ids), for COCO evaluation.

        Annotation ids start at 1: COCOeval uses id 0 to mean "unmatched".
        """
        images = [
            {"id": int(r.image_id), "file_name": r.file.name, "width": int(r.width), "height": int(r.height)}
            for r in self.records
        ]
        annotations: list[dict[str, Any]] = []
        for record in self.records:
            annotations.extend(self._coco_annotations(record, first_id=len(annotations) + 1))
        categories = [{"id": int(c), "name": n} for c, n in zip(self.category_ids, self.class_names, strict=True)]
        return {"info": {}, "licenses": [], "images": images, "annotations": annotations, "categories": categories}

    def _coco_annotations(self, record: ImageRecord, first_id: int) -> list[dict[str, Any]]:
        if not record.num_boxes:
            return []
        xywh = record.boxes.astype(np.float64)
        xywh[:, 2:] -= xywh[:, :2]
        category = self.category_id_of(record.labels).tolist()
        assert record.areas is not None  # ImageRecord.__post_init__ fills it
        areas, crowd = record.areas.astype(np.float64).tolist(), record.iscrowd.astype(int).tolist()
        return [
            {
                "id": first_id + i,
                "image_id": int(record.image_id),
                "category_id": category[i],
                "bbox": box,
                "area": areas[i],
                "iscrowd": crowd[i],
            }
            for i, box in enumerate(xywh.tolist())
        ]
