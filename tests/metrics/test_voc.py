"""VOC mAP (eval.metric voc07 / voc): hand-computed cases, and a second implementation written here from the
VOC devkit's published definition (VOCevaldet.m and VOCap.m of the VOC2012 devkit; 11-point AP from VOC2007's)."""

import json

import numpy as np
import pytest

from multibox.metrics.coco import evaluate_metrics
from multibox.metrics.voc import voc_ap, voc_evaluate


def _gt(boxes_by_image: dict[int, list[tuple[list[float], int, int]]], categories=(1,)) -> dict:
    """image id -> [(xyxy, category, difficult)] as a COCO gt dict (difficult = iscrowd, as the VOC reader makes it)."""
    annotations = []
    for image, objects in boxes_by_image.items():
        for (x0, y0, x1, y1), category, difficult in objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image,
                    "category_id": category,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": difficult,
                }
            )
    return {
        "images": [{"id": i, "width": 100, "height": 100} for i in boxes_by_image],
        "annotations": annotations,
        "categories": [{"id": c, "name": f"c{c}"} for c in categories],
    }


def _det(image: int, xyxy: list[float], score: float, category: int = 1) -> dict:
    x0, y0, x1, y1 = xyxy
    return {"image_id": image, "category_id": category, "bbox": [x0, y0, x1 - x0, y1 - y0], "score": score}


A, B, D = [10, 10, 30, 30], [50, 50, 80, 90], [0, 60, 20, 80]


def test_hand_computed_duplicate_and_difficult() -> None:
    """TP on A (0.9), duplicate on A (0.8: FP), on the difficult box (0.7: ignored), TP on B (0.6).
    recall .5 .5 .5 1, precision 1 .5 .5 2/3 -> 11-point: (6 x 1 + 5 x 2/3) / 11; all-point: .5 x 1 + .5 x 2/3."""
    gt = _gt({1: [(A, 1, 0), (B, 1, 0), (D, 1, 1)]})
    dets = [_det(1, A, 0.9), _det(1, [11, 10, 30, 30], 0.8), _det(1, D, 0.7), _det(1, [50, 52, 80, 90], 0.6)]
    assert voc_evaluate(gt, dets, use_07_metric=True)["voc_map"] == pytest.approx((6 + 5 * 2 / 3) / 11)
    assert voc_evaluate(gt, dets, use_07_metric=False)["voc_map"] == pytest.approx(0.5 + 0.5 * 2 / 3)
    # The difficult flag matters: counted as a normal box, D adds a positive and its detection is a TP.
    flat = _gt({1: [(A, 1, 0), (B, 1, 0), (D, 1, 0)]})
    # recall 1/3 1/3 2/3 1, precision 1 .5 2/3 3/4: all-point = 1/3 x 1 + 1/3 x 3/4 + 1/3 x 3/4
    assert voc_evaluate(flat, dets, use_07_metric=False)["voc_map"] == pytest.approx((1 + 0.75 + 0.75) / 3)


def test_hand_computed_classes_images_and_misses() -> None:
    """Class 1: a detection on an image without class-1 gt (FP) outranks the TP; class 2: no detection (AP 0);
    class 3: no gt at all, left out of the mean."""
    gt = _gt({1: [(A, 1, 0)], 2: [(B, 2, 0)]}, categories=(1, 2, 3))
    dets = [_det(2, A, 0.9), _det(1, A, 0.5), _det(1, B, 0.4, category=3)]
    result = voc_evaluate(gt, dets, use_07_metric=False)
    # class 1: recall 0 1, precision 0 .5 -> all-point .5
    assert result["voc_per_class"] == pytest.approx({"c1": 0.5, "c2": 0.0})
    assert result["voc_map"] == pytest.approx(0.25)
    # 11-point: max precision at recall >= t is .5 for every t
    assert voc_evaluate(gt, dets, use_07_metric=True)["voc_per_class"]["c1"] == pytest.approx(0.5)


def test_iou_threshold_and_no_ground_truth() -> None:
    gt = _gt({1: [([0, 0, 10, 10], 1, 0)]})
    half = [_det(1, [0, 0, 10, 5], 0.9)]  # IoU exactly 0.5: the devkit's ">= minoverlap" counts it
    assert voc_evaluate(gt, half)["voc_map"] == pytest.approx(1.0)
    below = [_det(1, [0, 0, 10, 4.9], 0.9)]
    assert voc_evaluate(gt, below)["voc_map"] == 0.0
    only_difficult = _gt({1: [([0, 0, 10, 10], 1, 1)]})
    assert voc_evaluate(only_difficult, half) == {"voc_map": -1.0, "voc_per_class": {}, "voc_metric": "voc07"}


def test_voc_ap_of_perfect_and_empty_curves() -> None:
    assert voc_ap(np.array([0.5, 1.0]), np.array([1.0, 1.0]), True) == pytest.approx(1.0)
    assert voc_ap(np.array([0.5, 1.0]), np.array([1.0, 1.0]), False) == pytest.approx(1.0)
    assert voc_ap(np.zeros(0), np.zeros(0), True) == 0.0


# --- a second implementation, line by line from the devkit ---------------------------------------------------


def _devkit_class_ap(gt: dict, dets: list[dict], category: int, use_07: bool) -> float:
    """VOCevaldet.m for one class (without its "+1": boxes here are continuous edges), then VOCap.m / the
    VOC2007 11-point loop."""
    objects = {}
    npos = 0
    for a in gt["annotations"]:
        if a["category_id"] != category:
            continue
        x, y, w, h = a["bbox"]
        entry = objects.setdefault(a["image_id"], {"BB": [], "diff": [], "det": []})
        entry["BB"].append([x, y, x + w, y + h])
        entry["diff"].append(bool(a["iscrowd"]))
        entry["det"].append(False)
        npos += not a["iscrowd"]
    mine = [d for d in dets if d["category_id"] == category]
    confidence = np.array([d["score"] for d in mine])
    si = np.argsort(-confidence, kind="stable")  # [sc,si]=sort(-confidence)
    nd = len(mine)
    tp, fp = np.zeros(nd), np.zeros(nd)
    for d in range(nd):
        det = mine[si[d]]
        x, y, w, h = det["bbox"]
        bb = [x, y, x + w, y + h]
        ovmax, jmax = -np.inf, -1
        entry = objects.get(det["image_id"], {"BB": [], "diff": [], "det": []})
        for j, bbgt in enumerate(entry["BB"]):
            bi = [max(bb[0], bbgt[0]), max(bb[1], bbgt[1]), min(bb[2], bbgt[2]), min(bb[3], bbgt[3])]
            iw, ih = bi[2] - bi[0], bi[3] - bi[1]
            if iw > 0 and ih > 0:
                ua = (bb[2] - bb[0]) * (bb[3] - bb[1]) + (bbgt[2] - bbgt[0]) * (bbgt[3] - bbgt[1]) - iw * ih
                ov = iw * ih / ua
                if ov > ovmax:
                    ovmax, jmax = ov, j
        if ovmax >= 0.5:
            if not entry["diff"][jmax]:
                if not entry["det"][jmax]:
                    tp[d] = 1
                    entry["det"][jmax] = True
                else:
                    fp[d] = 1
        else:
            fp[d] = 1
    fp, tp = np.cumsum(fp), np.cumsum(tp)
    rec = tp / npos
    with np.errstate(invalid="ignore"):
        prec = tp / (fp + tp)
    if use_07:
        ap = 0.0
        for t in np.arange(0, 1.1, 0.1):
            p = np.nanmax(prec[rec >= t]) if (rec >= t).any() else 0.0
            ap += (0.0 if np.isnan(p) else p) / 11
        return ap
    mrec = np.concatenate(([0], rec, [1]))
    mpre = np.nan_to_num(np.concatenate(([0], prec, [0])))
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    i = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[i] - mrec[i - 1]) * mpre[i]))


def _random_case(seed: int) -> tuple[dict, list[dict]]:
    """Jittered copies of gt boxes (some duplicated, some off target), false alarms, difficult boxes, 3 classes."""
    rng = np.random.default_rng(seed)
    boxes: dict[int, list] = {}
    dets = []
    for image in range(1, 9):
        objects = []
        for _ in range(int(rng.integers(0, 6))):
            x, y = rng.uniform(0, 70, 2)
            w, h = rng.uniform(8, 30, 2)
            objects.append(([x, y, x + w, y + h], int(rng.integers(1, 4)), int(rng.random() < 0.2)))
            for _ in range(int(rng.integers(0, 3))):  # detections of it, some duplicated, some poor
                jitter = rng.normal(0, rng.choice([1.0, 6.0]), 4)
                box = np.array([x, y, x + w, y + h]) + jitter
                category = objects[-1][1] if rng.random() < 0.85 else int(rng.integers(1, 4))
                dets.append(_det(image, box.tolist(), float(rng.random()), category))
        boxes[image] = objects
        for _ in range(int(rng.integers(0, 3))):
            x, y = rng.uniform(0, 80, 2)
            dets.append(_det(image, [x, y, x + 15, y + 12], float(rng.random()), int(rng.integers(1, 4))))
    return _gt(boxes, categories=(1, 2, 3)), dets


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("use_07", [True, False])
def test_matches_the_devkit_definition(seed, use_07) -> None:
    gt, dets = _random_case(seed)
    result = voc_evaluate(gt, dets, use_07_metric=use_07)
    expected = {}
    for category in (1, 2, 3):
        if any(a["category_id"] == category and not a["iscrowd"] for a in gt["annotations"]):
            expected[f"c{category}"] = _devkit_class_ap(gt, dets, category, use_07)
    assert result["voc_per_class"] == pytest.approx(expected)
    assert result["voc_map"] == pytest.approx(np.mean(list(expected.values())))


def test_metrics_have_voc_beside_coco_keys_and_are_json() -> None:
    gt, dets = _random_case(0)
    metrics = evaluate_metrics(gt, dets, metric="voc07")
    assert {"map", "map_50", "per_class", "voc_map", "voc_per_class"} <= set(metrics)
    assert metrics["voc_metric"] == "voc07"
    json.dumps(metrics, allow_nan=False)
    assert "voc_map" not in evaluate_metrics(gt, dets, metric="coco")
