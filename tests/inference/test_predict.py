"""multibox predict on images and folders: annotated copies, COCO results that faster-coco-eval loads, label files."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
from faster_coco_eval import COCO

from multibox.cli import main
from multibox.errors import MultiboxError
from multibox.inference.predict import predict

# A second OpenMP thread spins against the loaded CPU and slows tiny forward passes 10x (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")
CONF = 0.3


@pytest.fixture
def nested_images(shapes_dataset, tmp_path):
    """The five shapes images, two of them moved into sub/deeper/, plus one file that is not an image."""
    root = tmp_path / "images"
    shutil.copytree(shapes_dataset / "images", root)
    (root / "sub/deeper").mkdir(parents=True)
    for name in ("000003.jpg", "000004.jpg"):
        (root / name).rename(root / "sub/deeper" / name)
    return root


def test_folder_predictions_load_in_faster_coco_eval_and_equal_the_api(
    shapes_dataset, tiny_checkpoint, make_detector, tmp_path
):
    out = tmp_path / "pred"
    results = predict(
        tiny_checkpoint, shapes_dataset / "images", out, conf=CONF, batch_size=2, device="cpu", progress=False
    )
    assert json.loads((out / "predictions.json").read_text()) == results and results

    gt = COCO(str(shapes_dataset / "annotations.json"))
    loaded = gt.loadRes(str(out / "predictions.json"))
    ids_by_name = {image["file_name"]: image["id"] for image in gt.dataset["images"]}
    assert {r["image_id"] for r in results} <= set(ids_by_name.values())
    assert all(ids_by_name[r["file_name"]] == r["image_id"] for r in results)
    assert len(loaded.getAnnIds()) == len(results)

    # The CLI writes what the Python API returns, image for image.
    detector = make_detector(conf=CONF)
    expected = []
    for name, image_id in sorted(ids_by_name.items()):
        expected += detector(shapes_dataset / "images" / name)[0].to_coco(image_id, name)
    assert len(results) == len(expected)
    for got, want in zip(results, expected, strict=True):
        assert got["image_id"] == want["image_id"] and got["category_id"] == want["category_id"]
        np.testing.assert_allclose(got["bbox"], want["bbox"], atol=0.02)
        assert got["score"] == pytest.approx(want["score"], abs=2e-4)

    for name in ids_by_name:  # annotated copies: same size, not the original pixels
        drawn, original = cv2.imread(str(out / name)), cv2.imread(str(shapes_dataset / "images" / name))
        assert drawn.shape == original.shape
    assert any(r["file_name"] == "000000.jpg" for r in results)
    assert (
        np.abs(
            cv2.imread(str(out / "000000.jpg")).astype(int) - cv2.imread(str(shapes_dataset / "images/000000.jpg"))
        ).max()
        > 100
    )


def test_recursive_folder_keeps_relative_paths_skips_unreadable_and_writes_yolo_labels(
    nested_images, tiny_checkpoint, tmp_path
):
    (nested_images / "sub/broken.png").write_bytes(b"not a png")
    out = tmp_path / "pred"
    with pytest.warns(UserWarning, match="broken.png: cannot read image .*skipped"):
        results = predict(
            tiny_checkpoint,
            nested_images,
            out,
            conf=CONF,
            batch_size=3,
            device="cpu",
            progress=False,
            save_txt=True,
            max_det=4,
        )
    names = [
        "000000.jpg",
        "000001.jpg",
        "000002.jpg",
        "sub/broken.png",
        "sub/deeper/000003.jpg",
        "sub/deeper/000004.jpg",
    ]
    assert {r["file_name"] for r in results} <= set(names) - {"sub/broken.png"}
    assert {r["image_id"] for r in results if r["file_name"] == "sub/deeper/000004.jpg"} == {
        6
    }  # position in sorted order
    for index, name in enumerate(names):
        if name == "sub/broken.png":
            assert not (out / name).exists() and not (out / "labels/sub/broken.txt").exists()
            continue
        assert (out / name).is_file()
        lines = (out / "labels" / name).with_suffix(".txt").read_text().splitlines()
        mine = [r for r in results if r["image_id"] == index + 1]
        assert len(lines) == len(mine) <= 4
        for line, r in zip(lines, mine, strict=True):  # class cx cy w h score, normalised by the 64x64 image
            cls, cx, cy, w, h, score = (float(v) for v in line.split())
            x, y, bw, bh = r["bbox"]
            assert cls + 1 == r["category_id"] and score == pytest.approx(r["score"], abs=1e-4)
            np.testing.assert_allclose(
                [cx, cy, w, h], [(x + bw / 2) / 64, (y + bh / 2) / 64, bw / 64, bh / 64], atol=1e-3
            )


def test_out_inside_the_source_folder_is_not_read_back(nested_images, tiny_checkpoint):
    out = nested_images / "pred"  # e.g. left by an interrupted run: annotated copies, no predictions.json
    (out / "sub").mkdir(parents=True)
    shutil.copy(nested_images / "000000.jpg", out / "sub/000000.jpg")
    results = predict(tiny_checkpoint, nested_images, out, conf=CONF, device="cpu", progress=False)
    assert results and not any(r["file_name"].startswith("pred/") for r in results)
    assert max(r["image_id"] for r in results) <= 5


def test_cli_options_reach_the_detector(shapes_dataset, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "pred"
    args = [
        "predict",
        "--weights",
        str(tiny_checkpoint),
        "--source",
        str(shapes_dataset / "images"),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--conf",
        "0.25",
        "--iou",
        "0.3",
        "--max-det",
        "2",
        "--classes",
        "square,star",
        "1",
        "--save-txt",
    ]
    assert main(args) == 0
    results = json.loads((out / "predictions.json").read_text())
    assert f"{len(results)} detections written" in capsys.readouterr().out
    assert results and {r["category_id"] for r in results} <= {2, 5}  # square and star
    assert all(r["score"] >= 0.25 for r in results)
    per_image = np.bincount([r["image_id"] for r in results])
    assert per_image.max() <= 2
    assert len(list((out / "labels").glob("*.txt"))) == 5


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--half"], "half: fp16 inference needs a CUDA device"),
        (["--classes", "dog"], "classes: unknown class 'dog'"),
        (["--conf", "2"], "conf: must be in [0, 1], got 2"),
    ],
)
def test_cli_option_errors_are_one_line(shapes_dataset, tiny_checkpoint, tmp_path, capsys, extra, message):
    args = [
        "predict",
        "--weights",
        str(tiny_checkpoint),
        "--source",
        str(shapes_dataset / "images/000000.jpg"),
        "--out",
        str(tmp_path / "pred"),
        "--device",
        "cpu",
        *extra,
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_sources_that_are_not_images_or_videos(tiny_checkpoint, tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "empty").mkdir()
    cases = [
        (tmp_path / "notes.txt", "notes.txt: not an image or video file name"),
        (tmp_path / "empty", "empty: no images found"),
        (tmp_path / "missing", "missing: no such file or folder"),
    ]
    for source, message in cases:
        with pytest.raises(MultiboxError, match=message):
            predict(tiny_checkpoint, source, tmp_path / "out", device="cpu", progress=False)
