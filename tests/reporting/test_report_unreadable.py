"""The report agrees with metrics.json when some validation images are unreadable (issue 13, item 3)."""

import json

import numpy as np

from multibox.data.formats import load_dataset
from multibox.metrics.coco import coco_evaluate
from multibox.metrics.evaluation import Evaluation
from multibox.reporting.report import write_evaluation_report


def test_unreadable_images_are_left_out_of_curves_and_matrix(shapes_dataset, tmp_path):
    dataset = load_dataset("coco", shapes_dataset / "images", shapes_dataset / "annotations.json")
    readable = [r for r in dataset.records[:3]]  # the 4th and 5th "could not be read"
    detections = [
        {
            "image_id": int(r.image_id),
            "category_id": int(dataset.category_ids[label - 1]),
            "score": 0.9,
            "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
        }
        for r in readable
        for (x1, y1, x2, y2), label in zip(r.boxes.tolist(), r.labels.tolist(), strict=False)
    ]
    evaluated = {int(r.image_id) for r in readable}
    gt = dataset.to_coco_gt()
    seen = {
        **gt,
        "images": [i for i in gt["images"] if i["id"] in evaluated],
        "annotations": [a for a in gt["annotations"] if a["image_id"] in evaluated],
    }
    metrics = coco_evaluate(seen, detections, dataset.class_names)
    assert metrics["map_50"] == 1.0
    write_evaluation_report(tmp_path, Evaluation(metrics, detections, seen), dataset)
    curves = json.loads((tmp_path / "pr_curves.json").read_text())
    assert np.isclose(curves["iou"]["0.50"]["ap"], metrics["map_50"])
    matrix = np.array(json.loads((tmp_path / "confusion_matrix.json").read_text())["counts"])
    assert matrix[:, -1].sum() == 0  # no ground-truth box counted as missed (predicted background)
    assert "2 unreadable" in (tmp_path / "report.md").read_text()
