"""COCO evaluation time: multibox's coco_evaluate (faster-coco-eval) against pycocotools.

Synthetic COCO set: 5,000 images of 640x480, 80 categories with COCO's id gaps, 1-13 ground-truth
boxes per image (~7), 100 detections per image (jittered copies of the ground truth with high
scores, the rest random with low scores). Both sides start from the same dicts and run the whole
bbox evaluation (index, loadRes, evaluate, accumulate, summarize; multibox adds its per-class AP).
Each run is a fresh child process (alternating sides), which also gives its peak RSS growth; the
12 summary numbers are checked to be equal.

    python benchmarks/bench_eval.py                    # 5,000 images, 1 run per side (~2 min)
    python benchmarks/bench_eval.py --images 500 --repeats 3
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np
from memory import status_mb

COCO_IDS = [i for i in range(1, 91) if i not in {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}]


def make_coco(num_images: int, detections_per_image: int = 100, seed: int = 0) -> tuple[dict, list[dict]]:
    rng = np.random.default_rng(seed)
    images, annotations, results = [], [], []
    for image_id in range(1, num_images + 1):
        images.append({"id": image_id, "width": 640, "height": 480, "file_name": f"{image_id:06d}.jpg"})
        n = int(rng.integers(1, 14))
        wh = rng.uniform(8, 300, (n, 2))
        xy = rng.uniform(0, 1, (n, 2)) * (np.array([640, 480]) - wh)
        labels = rng.choice(COCO_IDS, n)
        for box, label in zip(np.hstack((xy, wh)), labels, strict=True):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(label),
                    "bbox": [float(v) for v in box],
                    "area": float(box[2] * box[3]),
                    "iscrowd": 0,
                }
            )
        copies = rng.integers(0, n, detections_per_image // 2)
        jitter = np.hstack((xy, wh))[copies] * rng.normal(1, 0.1, (len(copies), 4))
        rand_wh = rng.uniform(8, 300, (detections_per_image - len(copies), 2))
        random_boxes = np.hstack((rng.uniform(0, 1, (len(rand_wh), 2)) * (np.array([640, 480]) - rand_wh), rand_wh))
        boxes = np.vstack((jitter, random_boxes))
        cats = np.concatenate((labels[copies], rng.choice(COCO_IDS, len(rand_wh))))
        scores = np.concatenate((rng.uniform(0.3, 1, len(copies)), rng.uniform(0.01, 0.5, len(rand_wh))))
        for box, cat, score in zip(boxes, cats, scores, strict=True):
            results.append(
                {"image_id": image_id, "category_id": int(cat), "bbox": [float(v) for v in box], "score": float(score)}
            )
    categories = [{"id": i, "name": f"class{i}"} for i in COCO_IDS]
    return {"images": images, "annotations": annotations, "categories": categories}, results


def run_multibox(gt: dict, results: list[dict]) -> list[float]:
    from multibox.metrics.coco import METRIC_KEYS, coco_evaluate

    metrics = coco_evaluate(gt, results)
    return [metrics[k] for k in METRIC_KEYS]


def run_pycocotools(gt: dict, results: list[dict]) -> list[float]:
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(results))
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return [float(v) for v in evaluator.stats]


def child(side: str, num_images: int) -> None:
    """One evaluation in this process: prints {seconds, peak_mb, stats} as JSON."""
    gt, results = make_coco(num_images)
    run = run_multibox if side == "multibox" else run_pycocotools
    run(*make_coco(2, seed=1))  # imports and first-call costs outside the timing
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak-RSS mark: count only the evaluation
    base = status_mb("VmRSS")
    start = time.perf_counter()
    stats = run(gt, results)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "peak_mb": status_mb("VmHWM") - base, "stats": stats}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--child", choices=["multibox", "pycocotools"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.images)
    runs: dict[str, list[dict]] = {"multibox": [], "pycocotools": []}
    for _ in range(args.repeats):
        for side in runs:
            out = subprocess.run(
                [sys.executable, __file__, "--images", str(args.images), "--child", side],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            runs[side].append(json.loads(out.strip().splitlines()[-1]))
    ours, theirs = runs["multibox"][0]["stats"], runs["pycocotools"][0]["stats"]
    difference = max(abs(a - b) for a, b in zip(ours, theirs, strict=True))
    seconds = {k: statistics.median(r["seconds"] for r in v) for k, v in runs.items()}
    memory = {k: max(r["peak_mb"] for r in v) for k, v in runs.items()}
    print(
        f"\n{platform.machine()}, {args.images} images, {args.images * 100:,} detections, "
        f"median of {args.repeats} runs per side (fresh process each), load {os.getloadavg()[0]:.2f}; "
        f"largest difference of the 12 stats: {difference:.2g} (mAP {ours[0]:.4f})\n"
    )
    print("| case | multibox (faster-coco-eval) | pycocotools | ratio |\n|---|---|---|---|")
    print(
        f"| COCO eval, {args.images} images (s) | {seconds['multibox']:.2f} | {seconds['pycocotools']:.2f} "
        f"| {seconds['pycocotools'] / seconds['multibox']:.1f}× |"
    )
    print(f"| peak memory (MiB) | {memory['multibox']:.0f} | {memory['pycocotools']:.0f} | |")


if __name__ == "__main__":
    main()
