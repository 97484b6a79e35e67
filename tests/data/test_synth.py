"""Synthetic dataset: valid COCO, tight boxes (checked against the pixels), deterministic, no overwrite."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from multibox.data.synth import SHAPES, make_synthetic_dataset
from multibox.errors import MultiboxError


def _load(out_dir: Path) -> dict:
    return json.loads((out_dir / "annotations.json").read_text())


def test_writes_valid_coco(synth_dir: Path) -> None:
    from faster_coco_eval import COCO

    coco = _load(synth_dir)
    assert [c["id"] for c in coco["categories"]] == list(range(1, len(SHAPES) + 1))
    assert len(coco["images"]) == 10
    assert len({a["id"] for a in coco["annotations"]}) == len(coco["annotations"])
    assert min(a["id"] for a in coco["annotations"]) >= 1
    for image in coco["images"]:
        assert (image["width"], image["height"]) == (128, 96)
        assert cv2.imread(str(synth_dir / "images" / image["file_name"])).shape == (96, 128, 3)
        count = sum(a["image_id"] == image["id"] for a in coco["annotations"])
        assert 1 <= count <= 6
    for ann in coco["annotations"]:
        x, y, w, h = ann["bbox"]
        assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= 128 and y + h <= 96
        assert ann["area"] == w * h and ann["iscrowd"] == 0
    assert (synth_dir / "images" / "000000.jpg").is_file()
    api = COCO(str(synth_dir / "annotations.json"))  # the reference loader accepts it
    assert len(api.getImgIds()) == 10


def test_boxes_are_tight_around_shape_pixels(tmp_path: Path) -> None:
    # PNG keeps the flat object colour exact, so each shape's pixels can be found in the file.
    out = make_synthetic_dataset(tmp_path / "png", 12, size=(80, 112), seed=5, image_ext=".png")
    coco = _load(out)
    files = {image["id"]: out / "images" / image["file_name"] for image in coco["images"]}
    for ann in coco["annotations"]:
        image = cv2.imread(str(files[ann["image_id"]]))
        x, y, w, h = ann["bbox"]
        colours, counts = np.unique(image[y : y + h, x : x + w].reshape(-1, 3), axis=0, return_counts=True)
        colour = colours[np.argmax(counts)]  # the flat fill; the background is noisy
        y0, x0 = max(y - 4, 0), max(x - 4, 0)
        mask = np.all(image[y0 : y + h + 4, x0 : x + w + 4] == colour, axis=2)
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        assert [x0 + cols[0], y0 + rows[0], x0 + cols[-1] + 1, y0 + rows[-1] + 1] == [x, y, x + w, y + h]
        assert counts.max() >= 0.3 * w * h  # the shape fills a good part of its box


def test_jpeg_and_png_share_annotations(tmp_path: Path) -> None:
    jpg = make_synthetic_dataset(tmp_path / "jpg", 4, size=(64, 64), seed=9)
    png = make_synthetic_dataset(tmp_path / "png", 4, size=(64, 64), seed=9, image_ext=".png")
    assert _load(jpg)["annotations"] == _load(png)["annotations"]
    a = cv2.imread(str(jpg / "images" / "000001.jpg")).astype(int)
    b = cv2.imread(str(png / "images" / "000001.png")).astype(int)
    assert np.abs(a - b).mean() < 6


def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    first = make_synthetic_dataset(tmp_path / "a", 5, size=(64, 96), seed=1)
    again = make_synthetic_dataset(tmp_path / "b", 5, size=(64, 96), seed=1)
    other = make_synthetic_dataset(tmp_path / "c", 5, size=(64, 96), seed=2)
    assert _load(first) == _load(again)
    for name in ("000000.jpg", "000004.jpg"):
        assert (first / "images" / name).read_bytes() == (again / "images" / name).read_bytes()
    assert _load(first)["annotations"] != _load(other)["annotations"]


def test_all_classes_and_sizes_occur(tmp_path: Path) -> None:
    coco = _load(make_synthetic_dataset(tmp_path / "s", 60, size=(128, 128), seed=0))
    assert {a["category_id"] for a in coco["annotations"]} == set(range(1, len(SHAPES) + 1))
    sides = np.array([max(a["bbox"][2:]) for a in coco["annotations"]]) / 128
    assert sides.min() < 0.1 and sides.max() > 0.4


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    out = make_synthetic_dataset(tmp_path / "d", 2, size=(64, 64))
    before = (out / "annotations.json").read_bytes()
    with pytest.raises(MultiboxError, match="already holds a dataset") as error:
        make_synthetic_dataset(out, 3, size=(64, 64), seed=1)
    assert str(out) in str(error.value) and "\n" not in str(error.value)
    assert (out / "annotations.json").read_bytes() == before
    (tmp_path / "imgs" / "images").mkdir(parents=True)
    (tmp_path / "imgs" / "images" / "000000.jpg").write_bytes(b"mine")
    with pytest.raises(MultiboxError, match="not empty"):
        make_synthetic_dataset(tmp_path / "imgs", 1, size=(64, 64))
    assert (tmp_path / "imgs" / "images" / "000000.jpg").read_bytes() == b"mine"
