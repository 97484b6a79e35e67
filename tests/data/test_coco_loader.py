"""COCO loading: gapped ids remapped and mapped back, crowd flags, degenerate boxes, one-line errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from multibox.data.formats.coco import load_coco
from multibox.errors import MultiboxError


def _coco() -> dict[str, Any]:
    return {
        "images": [
            {"id": 7, "file_name": "a.jpg", "width": 100, "height": 80},
            {"id": 3, "file_name": "b.jpg", "width": 50, "height": 40},
            {"id": 9, "file_name": "c.jpg", "width": 60, "height": 60},
        ],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 90, "bbox": [10, 20, 30, 40], "area": 1000.0, "iscrowd": 0},
            {"id": 2, "image_id": 3, "category_id": 5, "bbox": [1, 2, 3, 4], "iscrowd": 1, "area": 7.5},
            {"id": 3, "image_id": 7, "category_id": 5, "bbox": [0, 0, 10, 10]},
            {"id": 4, "image_id": 7, "category_id": 12, "bbox": [5, 5, 0, 10]},
            {"id": 5, "image_id": 3, "category_id": 12, "bbox": [5, 5, 10, -1]},
        ],
        "categories": [
            {"id": 90, "name": "toothbrush"},
            {"id": 5, "name": "airplane"},
            {"id": 12, "name": "stop sign"},
        ],
    }


def test_gapped_category_ids_are_remapped_and_mapped_back(tmp_path: Path, write_coco: Callable) -> None:
    with pytest.warns(UserWarning, match="dropped 2 boxes"):
        data = load_coco(tmp_path, write_coco(_coco()))
    assert data.class_names == ["airplane", "stop sign", "toothbrush"]
    assert data.category_ids == [5, 12, 90] and data.num_classes == 3
    a, b, c = data.records
    assert (a.image_id, b.image_id, c.image_id) == (7, 3, 9)
    assert a.file == (tmp_path / "a.jpg").absolute() and a.file.is_absolute()
    assert (a.width, a.height) == (100, 80)
    np.testing.assert_array_equal(a.boxes, [[10, 20, 40, 60], [0, 0, 10, 10]])
    assert a.boxes.dtype == np.float32 and a.labels.dtype == np.int64
    np.testing.assert_array_equal(a.labels, [3, 1])
    np.testing.assert_array_equal(a.areas, [1000.0, 100.0])  # COCO area where given, else box area
    np.testing.assert_array_equal(data.category_id_of(a.labels), [90, 5])
    np.testing.assert_array_equal(data.category_id_of(torch.tensor([[1, 2], [3, 3]])), [[5, 12], [90, 90]])
    assert c.boxes.shape == (0, 4) and c.labels.shape == (0,)


def test_crowd_flag_is_kept(tmp_path: Path, write_coco: Callable) -> None:
    with pytest.warns(UserWarning):
        data = load_coco(tmp_path, write_coco(_coco()))
    a, b, _ = data.records
    assert a.iscrowd.dtype == bool and not a.iscrowd.any()
    np.testing.assert_array_equal(b.iscrowd, [True])
    np.testing.assert_array_equal(b.areas, [7.5])


def test_to_coco_gt_round_trips(tmp_path: Path, write_coco: Callable) -> None:
    with pytest.warns(UserWarning):
        data = load_coco(tmp_path, write_coco(_coco()))
    gt = data.to_coco_gt()
    json.dumps(gt)  # plain JSON types only
    assert {c["id"]: c["name"] for c in gt["categories"]} == {5: "airplane", 12: "stop sign", 90: "toothbrush"}
    assert [i["id"] for i in gt["images"]] == [7, 3, 9] and gt["images"][0]["file_name"] == "a.jpg"
    by_id = {(a["image_id"], a["category_id"]): a for a in gt["annotations"]}
    assert by_id[(7, 90)]["bbox"] == [10, 20, 30, 40] and by_id[(7, 90)]["area"] == 1000.0
    assert by_id[(3, 5)]["iscrowd"] == 1 and by_id[(7, 5)]["iscrowd"] == 0
    assert sorted(a["id"] for a in gt["annotations"]) == [1, 2, 3]
    reloaded = load_coco(tmp_path, write_coco(gt, "again.json"))
    assert reloaded.category_ids == data.category_ids
    for x, y in zip(reloaded.records, data.records, strict=True):
        np.testing.assert_array_equal(x.boxes, y.boxes)
        np.testing.assert_array_equal(x.labels, y.labels)
        np.testing.assert_array_equal(x.iscrowd, y.iscrowd)


def test_to_coco_gt_scores_perfect_detections_as_map_1(tmp_path: Path, write_coco: Callable) -> None:
    from faster_coco_eval import COCO, COCOeval_faster

    with pytest.warns(UserWarning):
        data = load_coco(tmp_path, write_coco(_coco()))
    gt = COCO(data.to_coco_gt())
    detections = [
        {"image_id": r.image_id, "category_id": int(c), "bbox": [x0, y0, x1 - x0, y1 - y0], "score": 1.0}
        for r in data.records
        for (x0, y0, x1, y1), c in zip(r.boxes.tolist(), data.category_id_of(r.labels), strict=True)
    ]
    evaluator = COCOeval_faster(gt, gt.loadRes(detections), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    assert evaluator.stats[0] == pytest.approx(1.0)
    detections[0]["category_id"] = 5  # a wrong class must cost something
    evaluator = COCOeval_faster(gt, gt.loadRes(detections), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    assert evaluator.stats[0] < 0.99


def _one_line_error(path: Path, images: Path | None = None) -> str:
    with pytest.raises(MultiboxError) as error:
        load_coco(images or path.parent, path)
    message = str(error.value)
    assert "\n" not in message and str(path) in message
    return message


def test_missing_file(tmp_path: Path) -> None:
    assert "not found" in _one_line_error(tmp_path / "nope.json")


def test_bad_json(write_coco: Callable) -> None:
    assert "invalid JSON" in _one_line_error(write_coco('{"images": [1, 2,'))


@pytest.mark.parametrize("key", ["images", "annotations", "categories"])
def test_missing_key(write_coco: Callable, key: str) -> None:
    coco = _coco()
    del coco[key]
    assert f"'{key}'" in _one_line_error(write_coco(coco))


def test_unknown_category(write_coco: Callable) -> None:
    coco = _coco()
    coco["annotations"][2]["category_id"] = 4
    assert "unknown category id 4" in _one_line_error(write_coco(coco))


def test_unknown_image(write_coco: Callable) -> None:
    coco = _coco()
    coco["annotations"][0]["image_id"] = 123
    assert "unknown image id 123" in _one_line_error(write_coco(coco))


def test_malformed_bbox_and_duplicates(write_coco: Callable) -> None:
    coco = _coco()
    coco["annotations"][0]["bbox"] = [1, 2, 3]
    assert "bbox" in _one_line_error(write_coco(coco))
    coco = _coco()
    coco["categories"].append({"id": 5, "name": "again"})
    assert "category id 5" in _one_line_error(write_coco(coco))


def test_missing_images_folder(tmp_path: Path, write_coco: Callable) -> None:
    path = write_coco(_coco())
    message = _one_line_error(path, images=tmp_path / "no_such_dir")
    assert "images folder not found" in message
