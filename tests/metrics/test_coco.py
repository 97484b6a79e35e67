"""coco_evaluate must give pycocotools' numbers; the accumulator must round-trip boxes."""

from __future__ import annotations

import contextlib
import copy
import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from rich.console import Console

from multibox.errors import MultiboxError
from multibox.metrics.coco import (
    METRIC_KEYS,
    DetectionAccumulator,
    _merge_ranks,
    coco_evaluate,
    format_metrics_table,
    precision_recall_curves,
    print_metrics,
)

CATEGORY_IDS = (1, 3, 7)


def make_gt(num_images: int = 6, seed: int = 0) -> dict:
    """Images with small, medium and large boxes of three non-contiguous categories, one crowd box."""
    rng = np.random.default_rng(seed)
    images = [{"id": 10 + i, "width": 640, "height": 480, "file_name": f"{i}.jpg"} for i in range(num_images)]
    annotations = []
    sides = (12.0, 20.0, 50.0, 80.0, 150.0, 260.0)  # areas below 32², between 32² and 96², above 96²
    for image in images:
        for _ in range(int(rng.integers(2, 6))):
            w, h = rng.choice(sides) * rng.uniform(0.8, 1.2, size=2)
            x, y = rng.uniform(0, 640 - w), rng.uniform(0, 480 - h)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image["id"],
                    "category_id": int(rng.choice(CATEGORY_IDS)),
                    "bbox": [float(x), float(y), float(w), float(h)],
                    "area": float(w * h),
                    "iscrowd": 0,
                }
            )
    annotations[3]["iscrowd"] = 1
    categories = [{"id": c, "name": f"class{c}"} for c in CATEGORY_IDS]
    return {"images": images, "annotations": annotations, "categories": categories}


def make_detections(gt: dict, seed: int = 1) -> list[dict]:
    """Jittered copies of most gt boxes (some with the wrong class), plus false positives."""
    rng = np.random.default_rng(seed)
    detections = []
    for ann in gt["annotations"]:
        if rng.uniform() < 0.15:  # a miss
            continue
        x, y, w, h = ann["bbox"]
        jitter = rng.normal(0.0, 0.08, size=4) * [w, h, w, h]
        category = ann["category_id"] if rng.uniform() > 0.1 else int(rng.choice(CATEGORY_IDS))
        detections.append(
            {
                "image_id": ann["image_id"],
                "category_id": category,
                "score": float(rng.uniform(0.2, 1.0)),
                "bbox": [x + jitter[0], y + jitter[1], max(1.0, w + jitter[2]), max(1.0, h + jitter[3])],
            }
        )
    for image in gt["images"]:
        for _ in range(int(rng.integers(0, 4))):
            w, h = rng.uniform(8, 200, size=2)
            detections.append(
                {
                    "image_id": image["id"],
                    "category_id": int(rng.choice(CATEGORY_IDS)),
                    "score": float(rng.uniform(0.0, 0.6)),
                    "bbox": [float(rng.uniform(0, 640 - w)), float(rng.uniform(0, 480 - h)), float(w), float(h)],
                }
            )
    return detections


def pycocotools_eval(gt: dict, detections: list[dict]) -> COCOeval:
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(detections))
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def test_gt_covers_all_area_ranges() -> None:
    areas = [a["area"] for a in make_gt()["annotations"] if not a["iscrowd"]]
    assert min(areas) < 32**2 and max(areas) > 96**2 and any(32**2 < a < 96**2 for a in areas)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_pycocotools(seed: int) -> None:
    gt, detections = make_gt(seed=seed), make_detections(make_gt(seed=seed), seed=seed + 10)
    metrics = coco_evaluate(gt, detections)
    reference = pycocotools_eval(gt, detections)

    assert list(metrics)[:12] == list(METRIC_KEYS)
    for key, expected in zip(METRIC_KEYS, reference.stats, strict=True):
        assert metrics[key] == pytest.approx(float(expected), abs=1e-6), key
    assert 0.0 < metrics["map"] < 1.0

    precision = reference.eval["precision"]  # (T, R, K, A, M)
    expected_per_class = {}
    for k, cat_id in enumerate(reference.params.catIds):
        values = precision[:, :, k, 0, 2]
        if (values > -1).any():
            expected_per_class[f"class{cat_id}"] = float(values[values > -1].mean())
    assert metrics["per_class"].keys() == expected_per_class.keys()
    for name, expected in expected_per_class.items():
        assert metrics["per_class"][name] == pytest.approx(expected, abs=1e-6), name


def test_inputs_not_modified() -> None:
    gt = make_gt()
    detections = make_detections(gt)
    gt_before, detections_before = copy.deepcopy(gt), copy.deepcopy(detections)
    coco_evaluate(gt, detections)
    assert gt == gt_before and detections == detections_before


def test_perfect_detections() -> None:
    gt = make_gt()
    detections = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": list(a["bbox"]), "score": 0.9}
        for a in gt["annotations"]
        if not a["iscrowd"]
    ]
    metrics = coco_evaluate(gt, detections)
    assert metrics["map"] == 1.0 and metrics["map_50"] == 1.0 and metrics["mar_100"] == 1.0
    assert all(value == 1.0 for value in metrics["per_class"].values())


def test_empty_detections_give_zeros() -> None:
    metrics = coco_evaluate(make_gt(), [])
    assert all(metrics[key] == 0.0 for key in METRIC_KEYS)
    assert metrics["per_class"] == {"class1": 0.0, "class3": 0.0, "class7": 0.0}


def test_class_without_gt_left_out_and_missing_area_is_minus_one() -> None:
    gt = make_gt()
    gt["categories"].append({"id": 9, "name": "unseen"})
    gt["annotations"] = [a for a in gt["annotations"] if a["area"] > 96**2]  # large boxes only
    detections = make_detections(gt) + [{"image_id": 10, "category_id": 9, "bbox": [0, 0, 50, 50], "score": 0.5}]
    metrics = coco_evaluate(gt, detections)
    reference = pycocotools_eval(gt, detections)
    for key, expected in zip(METRIC_KEYS, reference.stats, strict=True):
        assert metrics[key] == pytest.approx(float(expected), abs=1e-6), key
    assert metrics["map_small"] == -1.0 and metrics["map_medium"] == -1.0
    assert "unseen" not in metrics["per_class"]
    assert not any(math.isnan(v) for v in metrics["per_class"].values())


def test_class_names_override_and_check() -> None:
    metrics = coco_evaluate(make_gt(), [], class_names=["cat", "dog", "fox"])
    assert list(metrics["per_class"]) == ["cat", "dog", "fox"]
    with pytest.raises(ValueError, match="3 categories"):
        coco_evaluate(make_gt(), [], class_names=["cat"])


def test_unknown_image_id_is_a_one_line_error() -> None:
    detections = [{"image_id": 999, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5}]
    with pytest.raises(MultiboxError, match="not in the ground truth"):
        coco_evaluate(make_gt(), detections)


def test_quiet(capsys: pytest.CaptureFixture[str]) -> None:
    gt = make_gt()
    coco_evaluate(gt, make_detections(gt))
    assert capsys.readouterr().out == ""


def test_accumulator_round_trip() -> None:
    accumulator = DetectionAccumulator()
    accumulator.add(
        torch.tensor([5, 6]),
        [torch.tensor([[10.0, 20.0, 40.0, 60.0], [0.0, 0.0, 1.5, 2.25]]), torch.zeros((0, 4))],
        [torch.tensor([0.9, 0.3]), torch.zeros(0)],
        [torch.tensor([3, 7]), torch.zeros(0, dtype=torch.int64)],
    )
    accumulator.add(
        torch.tensor([8]),
        [torch.tensor([[100.0, 50.0, 300.0, 80.0]])],
        [torch.tensor([0.123456789])],
        [torch.tensor([1])],
    )
    results = accumulator.results()
    assert len(accumulator) == 3
    assert results == [
        {"image_id": 5, "category_id": 3, "bbox": [10.0, 20.0, 30.0, 40.0], "score": pytest.approx(0.9, abs=1e-6)},
        {"image_id": 5, "category_id": 7, "bbox": [0.0, 0.0, 1.5, 2.25], "score": pytest.approx(0.3, abs=1e-6)},
        {
            "image_id": 8,
            "category_id": 1,
            "bbox": [100.0, 50.0, 200.0, 30.0],
            "score": pytest.approx(0.12346, abs=1e-6),
        },
    ]
    assert all(
        type(r["image_id"]) is int and type(r["category_id"]) is int and type(r["score"]) is float for r in results
    )
    accumulator.reset()
    assert accumulator.results() == [] and len(accumulator) == 0


def test_accumulator_feeds_coco_evaluate() -> None:
    """Perfect detections through the accumulator (xyxy tensors) still score map == 1."""
    gt = make_gt()
    accumulator = DetectionAccumulator()
    for image in gt["images"]:
        anns = [a for a in gt["annotations"] if a["image_id"] == image["id"] and not a["iscrowd"]]
        xywh = torch.tensor([a["bbox"] for a in anns], dtype=torch.float64)
        xyxy = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1).float()
        accumulator.add(
            torch.tensor([image["id"]]),
            [xyxy],
            [torch.full((len(anns),), 0.8)],
            [torch.tensor([a["category_id"] for a in anns])],
        )
    assert coco_evaluate(gt, accumulator.results())["map"] == pytest.approx(1.0, abs=1e-9)


def test_images_the_loader_skipped_leave_the_metrics() -> None:
    """Perfect detections on every image but one that was never seen (unreadable, skipped): that image's
    objects must not count as misses, and the ground truth passed in stays untouched."""
    gt = make_gt()
    accumulator = DetectionAccumulator()
    skipped = gt["images"][-1]["id"]
    for image in gt["images"][:-1]:
        anns = [a for a in gt["annotations"] if a["image_id"] == image["id"] and not a["iscrowd"]]
        xywh = torch.tensor([a["bbox"] for a in anns], dtype=torch.float64).reshape(-1, 4)
        xyxy = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1).float()
        accumulator.add(
            torch.tensor([image["id"]]),
            [xyxy],
            [torch.full((len(anns),), 0.8)],
            [torch.tensor([a["category_id"] for a in anns])],
        )
    assert any(a["image_id"] == skipped and not a["iscrowd"] for a in gt["annotations"])
    assert coco_evaluate(gt, accumulator.results())["mar_100"] < 1.0  # counted as misses
    evaluated = accumulator.evaluated_ground_truth(gt)
    assert [im["id"] for im in evaluated["images"]] == [im["id"] for im in gt["images"][:-1]]
    assert coco_evaluate(evaluated, accumulator.results())["mar_100"] == pytest.approx(1.0)
    assert len(gt["images"]) == len(evaluated["images"]) + 1
    assert accumulator.evaluated_ground_truth(evaluated) is evaluated  # all seen: unchanged


def test_accumulator_keeps_first_copy_of_repeated_image() -> None:
    accumulator = DetectionAccumulator()
    box = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    accumulator.add(torch.tensor([1]), [box], [torch.tensor([0.5])], [torch.tensor([1])])
    accumulator.add(
        torch.tensor([1, 2]),
        [box, box],
        [torch.tensor([0.7]), torch.tensor([0.6])],
        [torch.tensor([1]), torch.tensor([1])],
    )
    assert [(r["image_id"], r["score"]) for r in accumulator.results()] == [(1, 0.5), (2, 0.6)]
    accumulator.gather()  # no process group: nothing changes
    assert len(accumulator) == 2


def test_merge_ranks_drops_images_seen_by_an_earlier_rank() -> None:
    row = lambda image_id, score: [image_id, 0, 0, 5, 5, score, 1]  # noqa: E731
    rank0 = (np.array([row(1, 0.5), row(2, 0.4)], dtype=np.float64), [1, 2, 3])
    rank1 = (np.array([row(3, 0.9), row(4, 0.8)], dtype=np.float64), [3, 4])  # 3 is a padding repeat
    merged = _merge_ranks([rank0, rank1])
    assert merged[:, 0].tolist() == [1, 2, 4]


def test_metrics_table_lists_all_metrics_and_classes() -> None:
    gt = make_gt()
    metrics = coco_evaluate(gt, make_detections(gt))
    console = Console(record=True, width=120)
    console.print(format_metrics_table(metrics, class_names=["class1", "class3", "class7", "ghost"]))
    text = console.export_text()
    assert "AP @[IoU=0.50:0.95 | area=all | maxDets=100]" in text
    assert "AR @[IoU=0.50:0.95 | area=small | maxDets=100]" in text
    assert all(key in text for key in METRIC_KEYS)
    assert f"{metrics['map']:.3f}" in text and "class7" in text and "ghost" in text and "no gt" in text

    console = Console(record=True, width=120)
    print_metrics({**metrics, "map_small": -1.0}, console=console)
    assert "n/a" in console.export_text()


def _gather_worker(rank: int, world_size: int, init_file: str, out: Any) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    accumulator = DetectionAccumulator()
    box = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    # DistributedSampler style: rank 0 sees images 1, 3; rank 1 sees 2 and a padding repeat of 1.
    for image_id in ((1, 3), (2, 1))[rank]:
        accumulator.add(torch.tensor([image_id]), [box], [torch.tensor([0.1 * (rank + 1)])], [torch.tensor([1])])
    accumulator.gather()
    out.put((rank, [(r["image_id"], r["score"]) for r in accumulator.results()]))
    torch.distributed.destroy_process_group()


def test_gather_across_two_processes(tmp_path: Path) -> None:
    # fork: the workers need this test module, which spawned interpreters could not import.
    queue = torch.multiprocessing.get_context("fork").SimpleQueue()
    torch.multiprocessing.start_processes(
        _gather_worker, args=(2, str(tmp_path / "init"), queue), nprocs=2, start_method="fork"
    )
    results = dict(queue.get() for _ in range(2))
    expected = [(1, 0.1), (3, 0.1), (2, 0.2)]
    assert results[0] == expected and results[1] == expected


# --- precision-recall curves (the report's pr_curves.json) -----------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_pr_curve_area_is_the_reported_ap(seed: int) -> None:
    """The mean of COCO's 101 interpolated precisions is its AP: curve areas equal map_50 / map_75 and
    pycocotools' per-class AP at those IoUs."""
    gt = make_gt(seed=seed)
    detections = make_detections(gt, seed=seed + 10)
    metrics = coco_evaluate(gt, detections)
    curves = precision_recall_curves(gt, detections)
    reference = pycocotools_eval(gt, detections).eval["precision"]  # (T, R, K, A, M)

    assert curves["recall"] == pytest.approx(np.linspace(0, 1, 101).tolist())
    for key, threshold, t in (("map_50", "0.50", 0), ("map_75", "0.75", 5)):
        entry = curves["iou"][threshold]
        assert len(entry["precision"]) == 101
        assert entry["ap"] == pytest.approx(metrics[key], abs=1e-9)
        assert float(np.mean(entry["precision"])) == pytest.approx(metrics[key], abs=1e-9)
        assert list(entry["per_class"]) == ["class1", "class3", "class7"]
        for k, name in enumerate(entry["per_class"]):
            expected = reference[t, :, k, 0, 2]
            assert entry["per_class"][name]["precision"] == pytest.approx(expected.tolist(), abs=1e-9), name
            assert entry["per_class"][name]["ap"] == pytest.approx(float(expected.mean()), abs=1e-9), name


def test_pr_curves_leave_out_classes_without_gt_and_reject_unknown_iou() -> None:
    gt = make_gt()
    gt["categories"].append({"id": 9, "name": "unseen"})
    curves = precision_recall_curves(gt, make_detections(gt), iou_thresholds=(0.5,))
    assert list(curves["iou"]) == ["0.50"] and "unseen" not in curves["iou"]["0.50"]["per_class"]
    assert curves["iou"]["0.50"]["ap"] == pytest.approx(coco_evaluate(gt, make_detections(gt))["map_50"], abs=1e-9)
    empty = precision_recall_curves({**gt, "annotations": []}, [])
    assert empty["iou"]["0.50"] == {"precision": [], "ap": -1.0, "per_class": {}}
    with pytest.raises(ValueError, match="0.62 is not one of COCO's"):
        precision_recall_curves(gt, [], iou_thresholds=(0.62,))
