"""Scale-aware anchors on small objects in large non-square frames: coverage and mAP before/after `anchors fit`.

Synthetic shapes 0.03-0.10 of the shorter side (22-72 px) on 720x1280 frames (an automotive-camera
aspect), trained at 384x640 with the demo's small SSDLite (MobileNetV3-Large x0.5, strides 8/16/32).
"Before" is the demo config's hand-chosen boxes (16-72 px); "after" is `anchors fit` on the training
set with at most as many default boxes. Both runs are otherwise identical and seeded.

    OMP_NUM_THREADS=1 python benchmarks/anchor_fit_demo.py --out /tmp/anchor_fit_demo            # fit + both trainings
    OMP_NUM_THREADS=1 python benchmarks/anchor_fit_demo.py --out /tmp/anchor_fit_demo --epochs 0 # coverage only
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from rich.console import Console

from multibox.boxes.anchor_fit import best_layout_ious, bucket_coverage, fit_anchors, fitted_config
from multibox.config import Config, load_config
from multibox.data.datamodule import DetectionDataModule
from multibox.data.records import DetectionSet
from multibox.data.stats import normalised_boxes, public
from multibox.data.synth import make_synthetic_dataset
from multibox.demo import DEMO_CONFIG
from multibox.engine.anchors import print_fit
from multibox.engine.train import train
from multibox.models.detector import model_geometry

FRAME, INPUT = (720, 1280), (384, 640)  # (H, W)
OBJECT_SIZES = (0.03, 0.10)  # fractions of the shorter side: 22-72 px in the frame, 12-38 px at the input
SPLITS = {"train": (120, 0), "val": (40, 1)}  # images, seed
MAX_OBJECTS = 12


def make_data(root: Path) -> None:
    for split, (count, seed) in SPLITS.items():
        if not (root / split / "annotations.json").is_file():
            make_synthetic_dataset(root / split, count, FRAME, seed, max_objects=MAX_OBJECTS, object_sizes=OBJECT_SIZES)


def base_overrides(root: Path, epochs: int) -> list[str]:
    return [
        f"data.train.images={root / 'train' / 'images'}",
        f"data.train.annotations={root / 'train' / 'annotations.json'}",
        f"data.val.images={root / 'val' / 'images'}",
        f"data.val.annotations={root / 'val' / 'annotations.json'}",
        f"data.input_size=[{INPUT[0]},{INPUT[1]}]",
        "data.batch_size=8",
        "data.num_workers=1",
        "scheduler.warmup_steps=10",
        f"train.epochs={max(epochs, 1)}",
        "train.progress=false",
        "train.accelerator=cpu",
        f"eval.every_n_epochs={max(epochs, 1)}",
    ]


def val_coverage(before: Config, after: Config, val_set: DetectionSet) -> dict:
    """Coverage of the held-out boxes by both layouts: does the fit generalise beyond the boxes it saw?"""
    gt, areas = normalised_boxes(val_set)
    size = tuple(before.data.input_size)
    best = [best_layout_ious(gt, *model_geometry(config), size) for config in (before, after)]
    return bucket_coverage(areas, best[0], best[1], before.loss.iou_threshold)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the data and both runs")
    parser.add_argument("--epochs", type=int, default=7, help="epochs per training run; 0: coverage only")
    args = parser.parse_args()
    console = Console()
    make_data(args.out / "data")
    config = load_config(DEMO_CONFIG, base_overrides(args.out / "data", args.epochs))
    started = time.perf_counter()
    data = DetectionDataModule(config)
    fit = fit_anchors(config, data.train_set, model_geometry(config), seed=config.train.seed)
    console.print(f"anchors fit: {time.perf_counter() - started:.1f} s")
    print_fit(fit, console)
    results = {
        "fit": {
            "box_sizes": fit.box_sizes,
            "aspect_ratios": fit.aspect_ratios,
            "boxes_before": fit.boxes_before,
            "boxes_after": fit.boxes_after,
            "buckets": fit.buckets,
        },
        "val_coverage": val_coverage(config, fitted_config(config, fit), data.val_set),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average": os.getloadavg(),
    }
    if args.epochs > 0:
        for name, run_config in (("before", config), ("after", fitted_config(config, fit))):
            run_config = run_config.model_copy(deep=True)
            run_config.train.output_dir = args.out / f"run_{name}"
            metrics = train(run_config)
            results[name] = {
                k: metrics[k] for k in ("map", "map_50", "map_small", "map_medium", "mar_100", "train_seconds")
            }
            console.print(f"{name}: {results[name]}")
        results["load_average_end"] = os.getloadavg()
    results = public(results)  # NaN (an empty size bucket) -> null
    (args.out / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    console.print_json(json.dumps(results))


if __name__ == "__main__":
    main()
