"""PASCAL VOC detection metric: AP at IoU 0.5 per class, "difficult" objects ignored (``eval.metric``).

The SSD paper (Liu et al., 2016, Tables 1-4) and pytorch-ssd report VOC2007 test mAP this way, not COCO's
AP@[.5:.95]; comparing a multibox run with their numbers needs the same metric. The rules are the VOC
devkit's (VOCevaldet.m; py-faster-rcnn's ``voc_eval.py`` is a faithful port):

- per class, detections of all images sorted by score; each is matched to the gt box of its image with
  the highest IoU; IoU >= 0.5 and that box not yet taken: true positive; taken, or IoU < 0.5: false
  positive; the best box is difficult: the detection is ignored (neither). (The devkit compares with
  ``>=``; py-faster-rcnn's port with ``>``, which differs only on exact ties.)
- difficult boxes do not count in the number of positives (recall's denominator);
- ``voc07``: VOC2007's 11-point interpolated AP (mean of the max precision at recall >= 0, 0.1, ..., 1);
  ``voc``: VOC2010+'s all-point AP (area under the monotone precision envelope).

multibox reads VOC's ``<difficult>`` as COCO's ``iscrowd``, so crowd boxes of COCO data are ignored the
same way. Boxes are continuous pixel edges (xyxy): IoU has no devkit "+1" (that belongs to its inclusive
integer coordinates, which the VOC reader has already converted).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from multibox.data.iou import iou_matrix

IOU_THRESHOLD = 0.5


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool) -> float:
    """AP from a class's cumulative recall and precision (in detection-score order)."""
    if use_07_metric:
        points = [precision[recall >= t].max() if (recall >= t).any() else 0.0 for t in np.linspace(0, 1, 11)]
        return float(np.mean(points))
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # the envelope: precision made non-increasing in recall
    changes = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[changes + 1] - mrec[changes]) * mpre[changes + 1]))


def _class_ap(
    gt_by_image: dict[int, tuple[np.ndarray, np.ndarray]], detections: list[dict[str, Any]], use_07_metric: bool
) -> float:
    """One class: `gt_by_image` image id -> (xyxy boxes, difficult flags); `detections` COCO results."""
    positives = sum(int((~difficult).sum()) for _, difficult in gt_by_image.values())
    taken = {image: np.zeros(len(boxes), bool) for image, (boxes, _) in gt_by_image.items()}
    order = sorted(detections, key=lambda d: -float(d["score"]))  # stable: ties keep their order, as in the devkit
    tp, fp = np.zeros(len(order)), np.zeros(len(order))
    for index, detection in enumerate(order):
        x, y, w, h = (float(v) for v in detection["bbox"])
        boxes, difficult = gt_by_image.get(int(detection["image_id"]), (np.zeros((0, 4)), np.zeros(0, bool)))
        if not len(boxes):
            fp[index] = 1
            continue
        overlaps = iou_matrix(np.array([[x, y, x + w, y + h]], np.float64), boxes)[0]
        best = int(overlaps.argmax())
        if overlaps[best] >= IOU_THRESHOLD:
            if difficult[best]:
                continue
            if not taken[int(detection["image_id"])][best]:
                tp[index] = 1
                taken[int(detection["image_id"])][best] = True
            else:
                fp[index] = 1
        else:
            fp[index] = 1
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    recall = tp / max(positives, 1)
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return voc_ap(recall, precision, use_07_metric)


def voc_evaluate(
    gt: dict, detections: list[dict], class_names: Sequence[str] | None = None, use_07_metric: bool = True
) -> dict[str, Any]:
    """VOC mAP of `detections` (COCO results) against a COCO gt dict (``iscrowd`` = VOC difficult).

    Returns ``{"voc_map": mean AP, "voc_per_class": {name: AP}, "voc_metric": "voc07" | "voc"}``. As
    the devkit's per-class table, a class without a (non-difficult) gt box has no AP and is left out
    of the mean; with none at all, ``voc_map`` is -1 (COCO's "nothing to measure").
    """
    categories = sorted(gt.get("categories", []), key=lambda c: c["id"])
    names = [str(c.get("name", c["id"])) for c in categories] if class_names is None else list(class_names)
    gt_by_class: dict[int, dict[int, list[tuple[list[float], bool]]]] = defaultdict(lambda: defaultdict(list))
    for annotation in gt.get("annotations", []):
        x, y, w, h = (float(v) for v in annotation["bbox"])
        gt_by_class[int(annotation["category_id"])][int(annotation["image_id"])].append(
            ([x, y, x + w, y + h], bool(annotation.get("iscrowd", 0)))
        )
    dets_by_class: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for detection in detections:
        dets_by_class[int(detection["category_id"])].append(detection)
    per_class: dict[str, float] = {}
    for category, name in zip(categories, names, strict=True):
        images = gt_by_class.get(int(category["id"]), {})
        arrays = {
            image: (np.array([b for b, _ in objs], np.float64).reshape(-1, 4), np.array([d for _, d in objs], bool))
            for image, objs in images.items()
        }
        if not sum(int((~difficult).sum()) for _, difficult in arrays.values()):
            continue
        per_class[name] = _class_ap(arrays, dets_by_class.get(int(category["id"]), []), use_07_metric)
    voc_map = float(np.mean(list(per_class.values()))) if per_class else -1.0
    return {"voc_map": voc_map, "voc_per_class": per_class, "voc_metric": "voc07" if use_07_metric else "voc"}
