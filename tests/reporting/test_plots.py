"""Matching for the confusion matrix and gallery, hand-counted; the figures and gallery images."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
from matplotlib.image import imread

from multibox.data.records import DetectionSet, ImageRecord
from multibox.errors import MultiboxError
from multibox.metrics.coco import precision_recall_curves
from multibox.reporting.draw import class_color
from multibox.reporting.plots import (
    BACKGROUND,
    GALLERY_SIDE,
    ImageOutcome,
    check_score_threshold,
    confusion_matrix,
    gallery_image,
    match_detections,
    match_image,
    plot_confusion_matrix,
    plot_pr_curves,
    worst_first,
    write_gallery,
)

BG = BACKGROUND


def box(x: float, y: float, w: float = 20, h: float = 20) -> list[float]:
    return [x, y, x + w, y + h]


def outcomes_of(result: tuple[np.ndarray, np.ndarray, np.ndarray]) -> list[tuple[int, int]]:
    true, predicted, _ = result
    return sorted(zip(true.tolist(), predicted.tolist(), strict=True))


def test_match_image_counts_each_kind_of_outcome() -> None:
    gt = np.array([box(0, 0), box(50, 0), box(0, 50)])  # A (class 0), B (class 1), C (class 0)
    detections = np.array([box(1, 1), box(50, 1), box(0, 0), box(100, 100)])
    result = match_image(gt, [0, 1, 0], detections, classes=[0, 0, 1, 1], scores=[0.9, 0.8, 0.7, 0.6])
    # A found; B found as class 0; a class-1 duplicate on A and a box on nothing are false; C missed.
    assert outcomes_of(result) == [(BG, 1), (BG, 1), (0, BG), (0, 0), (1, 0)]
    true, predicted, ious = result
    assert ious[(true == 0) & (predicted == 0)] == pytest.approx([361 / 439])  # 19x19 overlap of two 20x20 boxes
    assert confusion_matrix(true, predicted, 2).tolist() == [[1, 0, 1], [1, 0, 0], [0, 2, 0]]


def test_match_image_prefers_the_right_class_over_a_higher_score() -> None:
    """A wrong-class box with a higher score does not steal the object from a correct one (as in COCO)."""
    gt = np.array([box(0, 0, 40, 40)])
    detections = np.array([box(0, 0, 40, 40), box(4, 4, 40, 40)])  # exact but class 1; IoU 0.68 and class 0
    true, predicted, ious = match_image(gt, [0], detections, classes=[1, 0], scores=[0.9, 0.5])
    assert outcomes_of((true, predicted, ious)) == [(BG, 1), (0, 0)]
    assert ious[predicted == 0] == pytest.approx([36 * 36 / (2 * 1600 - 36 * 36)])


def test_match_image_threshold_crowd_and_empty_cases() -> None:
    gt = np.array([box(0, 0, 40, 40)])
    # IoU (30*40)/(40*40+40*40-30*40) = 0.6 matches; shifted by 20 gives 1/3 and does not.
    assert outcomes_of(match_image(gt, [0], np.array([box(10, 0, 40, 40)]), [0], [0.5])) == [(0, 0)]
    assert outcomes_of(match_image(gt, [0], np.array([box(20, 0, 40, 40)]), [0], [0.5])) == [(BG, 0), (0, BG)]
    assert outcomes_of(match_image(gt, [0], np.array([box(20, 0, 40, 40)]), [0], [0.5], iou_threshold=0.3)) == [(0, 0)]
    crowd = np.array([box(100, 100, 50, 50)])
    on_crowd = np.array([box(100, 100, 50, 50)])
    assert outcomes_of(match_image(np.zeros((0, 4)), [], on_crowd, [1], [0.9], ignore_boxes=crowd)) == []
    assert outcomes_of(match_image(np.zeros((0, 4)), [], on_crowd, [1], [0.9])) == [(BG, 1)]
    assert outcomes_of(match_image(gt, [2], np.zeros((0, 4)), [], [])) == [(2, BG)]
    true, predicted, ious = match_image(np.zeros((0, 4)), [], np.zeros((0, 4)), [], [])
    assert true.shape == predicted.shape == ious.shape == (0,)


def make_set(tmp_path: Path, images: int = 3) -> DetectionSet:
    """Flat grey 64x48 images; image i holds i+1 boxes of class label 1 (category id 3)."""
    records = []
    for i in range(images):
        file = tmp_path / f"img{i}.png"
        cv2.imwrite(str(file), np.full((48, 64, 3), 90, np.uint8))
        boxes = [box(2 + 20 * j, 4, 16, 16) for j in range(i + 1)]
        records.append(ImageRecord(i + 1, file, 64, 48, boxes, [1] * (i + 1), [False] * (i + 1)))
    return DetectionSet(records, ["cat", "dog"], [3, 7])


def coco(image_id: int, xyxy: list[float], category_id: int, score: float) -> dict:
    x1, y1, x2, y2 = xyxy
    return {"image_id": image_id, "category_id": category_id, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score}


def test_match_detections_maps_category_ids_and_drops_low_scores(tmp_path: Path) -> None:
    dataset = make_set(tmp_path)
    detections = [
        coco(1, box(2, 4, 16, 16), 3, 0.9),  # image 1: its one box found
        coco(1, box(40, 30, 10, 10), 7, 0.2),  # below the threshold: ignored
        coco(2, box(2, 4, 16, 16), 7, 0.8),  # image 2: first box as dog, second missed
        coco(3, box(22, 4, 16, 16), 3, 0.5),  # image 3: one of three found, plus a false dog
        coco(3, box(40, 30, 8, 8), 7, 0.4),
    ]
    outcomes = match_detections(dataset, detections, score_threshold=0.3)
    assert [o.record.image_id for o in outcomes] == [1, 2, 3]
    assert [(o.missed, o.false_positives, o.wrong_class, o.errors) for o in outcomes] == [
        (0, 0, 0, 0),
        (1, 0, 1, 2),
        (2, 1, 0, 3),
    ]
    assert outcomes[0].classes.tolist() == [0] and outcomes[0].boxes.tolist() == [box(2, 4, 16, 16)]
    total = confusion_matrix(
        np.concatenate([o.true for o in outcomes]), np.concatenate([o.predicted for o in outcomes]), 2
    )
    assert total.tolist() == [[2, 1, 3], [0, 0, 0], [0, 1, 0]]
    assert [o.record.image_id for o in worst_first(outcomes)] == [3, 2, 1]


def test_worst_first_breaks_ties_by_mean_iou(tmp_path: Path) -> None:
    record = make_set(tmp_path, 1).records[0]

    def outcome(image_id: int, true: list[int], predicted: list[int], ious: list[float]) -> ImageOutcome:
        r = ImageRecord(image_id, record.file, 64, 48)
        empty = np.zeros((0, 4))
        return ImageOutcome(
            r, empty, np.zeros(0, np.int64), np.zeros(0), np.array(true), np.array(predicted), np.array(ious)
        )

    good = outcome(1, [0, 0], [0, BG], [0.9, 0.0])  # one miss, matched at 0.9
    poor = outcome(2, [0, 0], [0, BG], [0.6, 0.0])  # one miss, matched at 0.6
    nothing = outcome(3, [0], [BG], [0.0])  # one miss, nothing matched: mean IoU 0
    clean = outcome(4, [0], [0], [0.5])
    assert [o.record.image_id for o in worst_first([clean, good, poor, nothing])] == [3, 2, 1, 4]
    assert nothing.mean_iou == 0.0 and poor.mean_iou == pytest.approx(0.6)


def test_gallery_image_draws_predictions_beside_ground_truth(tmp_path: Path) -> None:
    dataset = make_set(tmp_path)
    outcome = match_detections(dataset, [coco(2, box(2, 4, 16, 16), 7, 0.8)])[1]
    picture = gallery_image(outcome, dataset.class_names, "title")
    scale = GALLERY_SIDE / 64  # 64x48 -> 384x288
    assert picture.shape == (44 + 288, 2 * 384 + 6, 3)
    pair = picture[44:]
    left, right = pair[:, :384], pair[:, 390:]
    x, y = round(2 * scale) + 30, round(20 * scale)  # on the bottom edge of the first box
    assert tuple(left[y, x]) == class_color(2)  # the prediction, as dog
    assert tuple(right[y, x]) == class_color(1)  # the ground truth, a cat
    second = round(22 * scale) + 30  # the second cat: in the truth only
    assert tuple(right[y, second]) == class_color(1) and tuple(left[y, second]) == (90, 90, 90)


def test_write_gallery_ranks_skips_and_replaces(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "images").mkdir()
    dataset = make_set(tmp_path / "images")
    dataset.records[1].file.unlink()  # image 2 (2 errors) cannot be read any more
    folder = tmp_path / "gallery"
    folder.mkdir()
    (folder / "99_old.jpg").write_bytes(b"stale")
    with caplog.at_level(logging.WARNING):
        entries = write_gallery(match_detections(dataset, []), dataset.class_names, folder, count=3)
    assert [(e["rank"], e["image_id"], e["missed"]) for e in entries] == [(1, 3, 3), (2, 1, 1)]
    assert sorted(p.name for p in folder.iterdir()) == ["01_img2.jpg", "02_img0.jpg"]
    assert entries[0]["image"] == "gallery/01_img2.jpg"
    assert imread(folder / "01_img2.jpg").shape == (44 + 288, 2 * 384 + 6, 3)
    assert "img1.png" in caplog.text


def is_png_with_content(path: Path) -> bool:
    pixels = imread(path)
    return pixels.ndim == 3 and pixels.shape[0] > 100 and float(np.std(pixels)) > 0.0


def test_figures(tmp_path: Path) -> None:
    gt = make_set(tmp_path).to_coco_gt()
    detections = [
        coco(a["image_id"], [a["bbox"][0], a["bbox"][1], a["bbox"][0] + 16, a["bbox"][1] + 16], 3, 0.5 + 0.01 * a["id"])
        for a in gt["annotations"][1:]
    ]
    curves = precision_recall_curves(gt, detections, ["cat", "dog"])
    plot_pr_curves(curves, tmp_path / "pr.png", ["cat", "dog"])
    assert (
        is_png_with_content(tmp_path / "pr.png")
        and imread(tmp_path / "pr.png").shape[1] > 1.8 * imread(tmp_path / "pr.png").shape[0]
    )
    matrix = np.array([[3, 1, 0], [0, 2, 1], [4, 0, 0]])
    plot_confusion_matrix(matrix, ["a", "b"], tmp_path / "cm.png", 0.3)
    assert is_png_with_content(tmp_path / "cm.png")
    with pytest.raises(MultiboxError, match="cannot write plot"):
        plot_confusion_matrix(matrix, ["a", "b"], tmp_path / "cm.png" / "x.png", 0.3)


def test_confusion_matrix_of_many_classes(tmp_path: Path) -> None:
    """Beyond 25 classes the cells carry no numbers and the figure stops growing (80 COCO classes)."""
    matrix = np.random.default_rng(0).integers(0, 9, (81, 81))
    plot_confusion_matrix(matrix, [f"class{i}" for i in range(80)], tmp_path / "many.png", 0.3)
    assert is_png_with_content(tmp_path / "many.png") and imread(tmp_path / "many.png").shape[:2] == (1600, 3200)


def test_score_threshold_is_checked() -> None:
    assert check_score_threshold(0.0) == 0.0
    with pytest.raises(MultiboxError, match="report score threshold 1.5: must be between 0 and 1"):
        check_score_threshold(1.5)
