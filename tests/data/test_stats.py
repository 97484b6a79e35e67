"""`multibox data stats`: distribution numbers and default-box coverage on hand-made datasets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.ops import box_convert

from multibox.boxes.coverage import anchor_coverage
from multibox.cli import main
from multibox.commands.data_stats import config_stats, save_stats
from multibox.config import load_config
from multibox.data.records import DetectionSet, ImageRecord
from multibox.data.stats import dataset_stats
from multibox.models.detector import build_detector

TINY = ["model.name=ssdlite320_mobilenet_v3_large", "model.width_mult=0.5", "data.input_size=[64,64]"]


def _set(boxes_per_image: list[list[list[float]]], labels: list[list[int]], size=(100, 200)) -> DetectionSet:
    """Images of height x width = size, boxes xyxy in pixels."""
    h, w = size
    records = [
        ImageRecord(
            i + 1,
            Path(f"/nowhere/{i}.jpg"),
            w,
            h,
            np.array(b, np.float32).reshape(-1, 4),
            np.array(c),
            np.zeros(len(c), bool),
        )
        for i, (b, c) in enumerate(zip(boxes_per_image, labels, strict=True))
    ]
    return DetectionSet(records, ["a", "b"], [1, 2])


def test_distributions_on_a_hand_made_set() -> None:
    data = _set([[[0, 0, 10, 40], [0, 0, 50, 50]], [[10, 10, 20, 20]], []], [[1, 2], [1], []])
    stats = dataset_stats(data)
    assert stats["images"] == 3 and stats["boxes"] == 3 and stats["images_without_boxes"] == 1
    assert stats["boxes_per_class"] == {"a": 2, "b": 1}
    assert stats["boxes_per_image"]["p100"] == 2 and stats["boxes_per_image"]["p0"] == 0
    assert sorted([stats["size_px"]["p0"], stats["size_px"]["p50"], stats["size_px"]["p100"]]) == pytest.approx(
        [10, 20, 50]
    )
    assert stats["size_relative"]["p100"] == pytest.approx(50 / np.sqrt(100 * 200))
    assert stats["aspect_ratio"]["p0"] == pytest.approx(0.25) and stats["aspect_ratio"]["p100"] == pytest.approx(1.0)
    assert stats["per_class"]["a"]["aspect_ratio"]["p0"] == pytest.approx(0.25)
    assert stats["size_buckets"] == {"small": 2, "medium": 1, "large": 0}


def test_boxes_equal_to_default_boxes_are_covered_and_a_tiny_far_box_is_not() -> None:
    defaults = torch.tensor([[0.25, 0.25, 0.5, 0.5], [0.75, 0.75, 0.5, 0.5]])  # cxcywh, disjoint quadrants
    h, w = 100, 200
    exact = (box_convert(defaults, "cxcywh", "xyxy") * torch.tensor([w, h, w, h])).tolist()
    data = _set([[exact[0]], [exact[1], [199, 0, 200, 1]]], [[1], [2, 1]], size=(h, w))
    coverage = anchor_coverage(data, defaults, iou_threshold=0.5)
    assert coverage["boxes"] == 3 and coverage["uncovered"] == 1
    assert coverage["covered"] == pytest.approx(2 / 3)
    assert coverage["mean_best_iou"] == pytest.approx(2 / 3, abs=1e-4)  # 1, 1 and ~0
    assert coverage["size_buckets"]["small"]["covered"] == 0.0 and coverage["size_buckets"]["small"]["boxes"] == 1
    assert coverage["size_buckets"]["medium"]["covered"] == 1.0  # 100x50 px: 32^2 <= area < 96^2
    assert coverage["size_buckets"]["large"]["boxes"] == 0
    assert coverage["positives_per_object"]["p0"] == 1 and coverage["only_forced_match"] == 1


def test_coverage_of_a_real_detectors_default_boxes(tmp_path: Path) -> None:
    config = load_config(None, TINY)
    detector, _ = build_detector(config, 2, load_weights=False)
    xyxy = box_convert(detector.default_boxes, "cxcywh", "xyxy")
    inside = xyxy[((xyxy >= 0) & (xyxy <= 1)).all(dim=1)][::7][:30] * 64
    (tmp_path / "images").mkdir()
    coco = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 64}],
        "annotations": [
            {"id": i + 1, "image_id": 1, "category_id": 1 + i % 2, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]}
            for i, b in enumerate(inside.tolist())
        ],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    }
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    config = load_config(
        None, [*TINY, f"data.train.images={tmp_path / 'images'}", f"data.train.annotations={tmp_path / 'ann.json'}"]
    )
    stats = config_stats(config)
    coverage = stats["coverage"]
    assert coverage["boxes"] == len(inside) > 10
    assert coverage["covered"] == 1.0 and coverage["mean_best_iou"] == pytest.approx(1.0, abs=1e-5)
    assert coverage["default_boxes"] == len(detector.default_boxes)
    assert coverage["positives_per_object"]["p0"] >= 1
    png, json_path = save_stats(stats, tmp_path / "out")
    assert png.name == "stats.png" and json.loads(json_path.read_text())["coverage"]["covered"] == 1.0
    png2, json2 = save_stats(stats, tmp_path / "out")
    assert png2.name == "stats_1.png" and json2.name == "stats_1.json"


def test_cli_writes_png_and_json_into_the_default_folder(tmp_path: Path, capsys) -> None:
    assert main(["data", "synth", str(tmp_path / "d"), "--images", "5", "--size", "64x64"]) == 0
    config = tmp_path / "c.yaml"
    config.write_text(f"data:\n  train: {{images: {tmp_path}/d/images, annotations: {tmp_path}/d/annotations.json}}\n")
    args = ["data", "stats", "-c", str(config), *TINY, f"train.output_dir={tmp_path / 'run'}"]
    assert main(args) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "default-box coverage" in out and "small (COCO)" in out and "p95" in out
    folder = tmp_path / "run/data_stats"
    assert (folder / "stats.png").stat().st_size > 1000
    stats = json.loads((folder / "stats.json").read_text())
    assert stats["images"] == 5 and 0 <= stats["coverage"]["covered"] <= 1
    before = (folder / "stats.png").read_bytes()
    assert main(args) == 0
    assert (folder / "stats.png").read_bytes() == before and (folder / "stats_1.png").is_file()
