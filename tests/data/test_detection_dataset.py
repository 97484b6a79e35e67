"""DetectionDataset items and collate_detections batches: shapes, dtypes, normalisation, crowd, padding."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from multibox.data.dataset import DetectionDataset, collate_detections
from multibox.data.formats.coco import load_coco
from multibox.data.records import DetectionSet, ImageRecord
from multibox.data.transforms import build_eval_transform, build_train_transform
from multibox.errors import MultiboxError


def test_item_is_normalised_to_input(synth_dir: Path) -> None:
    data = load_coco(synth_dir / "images", synth_dir / "annotations.json")
    dataset = DetectionDataset(data, build_eval_transform((48, 80)), (48, 80))
    assert len(dataset) == 10
    image, target = dataset[2]
    record = data.records[2]
    assert image.shape == (3, 48, 80) and image.dtype == torch.uint8
    assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
    assert target["image_id"] == record.image_id and target["orig_size"] == (96, 128)
    expected = record.boxes / np.array([128, 96, 128, 96], np.float32)
    np.testing.assert_allclose(target["boxes"].numpy(), expected, atol=1e-6)
    np.testing.assert_array_equal(target["labels"].numpy(), record.labels)
    # RGB order, resized content: compare with OpenCV's own read.
    bgr = cv2.resize(cv2.imread(str(record.file)), (80, 48), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), bgr[..., ::-1])


def test_augmented_items_stay_in_unit_range(synth_dir: Path) -> None:
    data = load_coco(synth_dir / "images", synth_dir / "annotations.json")
    dataset = DetectionDataset(data, build_train_transform("ssd", (64, 64), seed=0), (64, 64))
    for index in range(len(dataset)):
        image, target = dataset[index]
        boxes = target["boxes"]
        assert image.shape == (3, 64, 64)
        assert torch.all((boxes >= 0) & (boxes <= 1)) and torch.all(boxes[:, 2:] > boxes[:, :2])
        assert len(boxes) == len(target["labels"]) and torch.all(target["labels"] >= 1)


def _one_image_set(tmp_path: Path, iscrowd: list[bool]) -> DetectionSet:
    cv2.imwrite(str(tmp_path / "img.png"), np.zeros((40, 50, 3), np.uint8))
    record = ImageRecord(
        image_id=5,
        file=tmp_path / "img.png",
        width=50,
        height=40,
        boxes=[[0, 0, 10, 10], [10, 10, 30, 30]][: len(iscrowd)],
        labels=[1, 2][: len(iscrowd)],
        iscrowd=iscrowd,
    )
    return DetectionSet([record], ["a", "b"], [1, 2])


def test_crowd_boxes_are_not_targets(tmp_path: Path) -> None:
    dataset = DetectionDataset(_one_image_set(tmp_path, [True, False]), build_eval_transform((40, 50)), (40, 50))
    _, target = dataset[0]
    assert target["labels"].tolist() == [2]
    np.testing.assert_allclose(target["boxes"].numpy(), [[0.2, 0.25, 0.6, 0.75]])


def test_unreadable_or_mismatched_image_is_a_one_line_error(tmp_path: Path) -> None:
    data = _one_image_set(tmp_path, [False])
    (tmp_path / "img.png").write_bytes(b"not an image")
    with pytest.raises(MultiboxError, match="cannot read image") as error:
        DetectionDataset(data, build_eval_transform((40, 50)), (40, 50))[0]
    assert str(tmp_path / "img.png") in str(error.value) and "\n" not in str(error.value)
    cv2.imwrite(str(tmp_path / "img.png"), np.zeros((20, 50, 3), np.uint8))
    with pytest.raises(MultiboxError, match="50x20 but its annotations say 50x40"):
        DetectionDataset(data, build_eval_transform((40, 50)), (40, 50))[0]


def _item(n: int, image_id: int) -> tuple[torch.Tensor, dict]:
    boxes = torch.rand(n, 4)
    return torch.full((3, 8, 10), image_id, dtype=torch.uint8), {
        "boxes": boxes,
        "labels": torch.arange(1, n + 1),
        "image_id": image_id,
        "orig_size": (30 + image_id, 40),
    }


def test_collate_pads_boxes_and_labels() -> None:
    items = [_item(2, 1), _item(0, 2), _item(3, 3)]
    batch = collate_detections(items)
    assert batch["images"].shape == (3, 3, 8, 10) and batch["images"].dtype == torch.uint8
    assert batch["boxes"].shape == (3, 3, 4) and batch["boxes"].dtype == torch.float32
    assert batch["labels"].shape == (3, 3) and batch["labels"].dtype == torch.int64
    assert batch["labels"].tolist() == [[1, 2, 0], [0, 0, 0], [1, 2, 3]]
    assert torch.equal(batch["boxes"][0, :2], items[0][1]["boxes"]) and not batch["boxes"][0, 2:].any()
    assert not batch["boxes"][1].any()
    assert batch["image_ids"].tolist() == [1, 2, 3] and batch["image_ids"].dtype == torch.int64
    assert batch["orig_sizes"].tolist() == [[31, 40], [32, 40], [33, 40]] and batch["orig_sizes"].dtype == torch.int64


def test_collate_without_boxes_keeps_one_slot() -> None:
    batch = collate_detections([_item(0, 1), _item(0, 2)])
    assert batch["boxes"].shape == (2, 1, 4) and batch["labels"].shape == (2, 1)
    assert not batch["boxes"].any() and not batch["labels"].any()


def test_loader_batches(synth_dir: Path) -> None:
    data = load_coco(synth_dir / "images", synth_dir / "annotations.json")
    dataset = DetectionDataset(data, build_train_transform("ssdlite", (64, 64)), (64, 64))
    batches = list(DataLoader(dataset, batch_size=4, collate_fn=collate_detections))
    assert [len(b["images"]) for b in batches] == [4, 4, 2]
    assert batches[0]["images"].shape == (4, 3, 64, 64)
    counts = (batches[0]["labels"] > 0).sum(1)
    assert batches[0]["boxes"].shape[1] == max(int(counts.max()), 1)
