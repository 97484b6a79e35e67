"""Small objects in large frames: whole-frame downscaling vs tiled training (+ full-frame or sliced inference).

The same light model (the demo's scale-aware SSDLite: MobileNetV3-Large at width 0.5, strides
8/16/32) is trained with the same budget (epochs, batch, optimizer) two ways on synthetic
1080x1920 frames (`multibox data synth --size 1080x1920 --min-size 0.0074 --max-size 0.185
--max-objects 40`: objects 8-200 px, half of them 8-40 px):

* ``down``: whole frames resized to 216x384 (the aspect kept), default boxes scaled by 216/1080;
* ``tiled``: 256x256 crops at native resolution (data.tiles, objects sampler).

Then evaluated on the same validation frames: ``down`` as trained; ``tiled`` at full frame with the
network rebuilt at 1080x1920 (same default boxes in pixels) and sliced into 256x256 tiles (NMS or
cut-box merge, with or without the full-frame pass). Each evaluation runs in its own process, for
its peak RSS; latency is the median wall time per frame at batch 1 frame.

    python benchmarks/bench_tiles.py run --root /tmp/tiles18 --epochs 8 --batch 8
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

MODEL = {
    "name": "custom",
    "backbone": "mobilenet_v3_large",
    "width_mult": 0.5,
    "strides": [8, 16, 32],
    "head": "ssdlite",
    "norm_momentum": 0.1,
}
NATIVE_SIZES = [[12, 20], [30, 48], [80, 130, 200]]  # default boxes in frame pixels (objects 8-200 px)
TILE = [256, 256]
DOWN = [216, 384]  # 1080x1920 / 5


def arm_config(root: Path, arm: str, epochs: int, batch: int) -> dict:
    """The training config of one arm; both share model, optimizer, schedule, epochs and batch."""
    scale = 1.0 if arm == "tiled" else DOWN[0] / 1080
    config = {
        "data": {
            "format": "coco",
            "train": {"images": str(root / "train/images"), "annotations": str(root / "train/annotations.json")},
            "input_size": TILE if arm == "tiled" else DOWN,
            "batch_size": batch,
            "num_workers": 1,
            "augment": "none",
        },
        "model": MODEL,
        "anchors": {
            "box_sizes": [[round(s * scale, 2) for s in level] for level in NATIVE_SIZES],
            "aspect_ratios": [[2], [2], [2]],
        },
        "optimizer": {"name": "adamw", "lr": 0.004, "weight_decay": 0.0001},
        "scheduler": {"name": "cosine", "warmup_steps": 30},
        "train": {"epochs": epochs, "output_dir": str(root / f"arm_{arm}"), "progress": False, "log_every_n_steps": 10},
        "eval": {"score_threshold": 0.01, "nms_threshold": 0.45, "topk_candidates": 200, "max_detections": 100},
    }
    if arm == "tiled":
        config["data"]["tiles"] = {"size": TILE, "overlap": 0.2, "sampler": "objects", "keep_min_visible": 0.5}
    return config


def train_arm(root: Path, arm: str, epochs: int, batch: int) -> dict:
    out = root / f"arm_{arm}"
    out.mkdir(parents=True, exist_ok=True)
    path = out / "config.yaml"
    path.write_text(yaml.safe_dump(arm_config(root, arm, epochs, batch)), encoding="utf-8")
    load, start = os.getloadavg()[0], time.perf_counter()
    with open(out / "train.log", "w") as log:
        subprocess.run(["multibox", "train", "-c", str(path)], check=True, stdout=log, stderr=subprocess.STDOUT)
    return {
        "arm": arm,
        "train_s": round(time.perf_counter() - start, 1),
        "load_before": round(load, 2),
        "load_after": round(os.getloadavg()[0], 2),
    }


def evaluate(checkpoint: Path, val: Path, variant: str, frames: int = 0) -> dict:
    """One evaluation, in this process: COCO metrics, median latency per frame, peak RSS."""
    import torch

    from multibox.data.dataset import read_image
    from multibox.data.formats.coco import load_coco
    from multibox.engine.checkpoint import load_checkpoint
    from multibox.inference.api import Detector
    from multibox.metrics.coco import coco_evaluate
    from multibox.models.detector import build_detector

    torch.set_num_threads(1)
    loaded = load_checkpoint(checkpoint)
    network, input_size = loaded.detector, tuple(loaded.config.data.input_size)
    options: dict = {"device": "cpu", "conf": 0.01, "max_det": 100}
    if variant == "native":  # the tile-trained network run on the whole frame at native scale (same boxes in pixels)
        config = loaded.config.model_copy(deep=True)
        config.data.input_size = (1080, 1920)
        network, _ = build_detector(config, len(loaded.class_names), load_weights=False)
        network.load_state_dict(loaded.detector.state_dict())
        input_size = (1080, 1920)
    elif variant.startswith("sliced"):
        options |= {
            "tile": tuple(TILE),
            "overlap": 0.2,
            "merge": "merge" if "merge" in variant else "nms",
            "full_frame": variant.endswith("+full"),
            "batch_size": 32,
        }
    detector = Detector(network.eval(), input_size, loaded.class_names, loaded.category_ids, **options)
    dataset = load_coco(val / "images", val / "annotations.json")
    records = dataset.records[:frames] if frames else dataset.records
    results, times = [], []
    for record in records:
        image = read_image(record.file, (record.height, record.width))
        start = time.perf_counter()
        found = detector.detect_rgb([image])[0]
        times.append(time.perf_counter() - start)
        results += found.to_coco(record.image_id)
    gt, ids = dataset.to_coco_gt(), {int(r.image_id) for r in records}
    gt = {
        **gt,
        "images": [i for i in gt["images"] if i["id"] in ids],
        "annotations": [a for a in gt["annotations"] if a["image_id"] in ids],
    }
    metrics = coco_evaluate(gt, results, loaded.class_names)
    keys = ("map", "map_50", "map_small", "map_medium", "map_large")
    epoch = int(torch.load(checkpoint, map_location="cpu", weights_only=False).get("epoch", -1)) + 1
    return {
        "variant": variant,
        "epochs_trained": epoch,
        "frames": len(records),
        **{k: round(float(metrics[k]), 4) for k in keys if k in metrics},
        "latency_ms": round(1000 * statistics.median(times), 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "load": round(os.getloadavg()[0], 2),
        "all_metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
    }


def evaluate_sliced_variants(checkpoint: Path, val: Path, frames: int = 0) -> list[dict]:
    """All four sliced variants (nms / merge, with and without the full-frame pass) from ONE pass over the
    tiles: the tiles' and the full frame's detections are computed once per frame and merged four ways.
    Latency per variant = forward time x (its passes / all passes) + its own merge time."""
    import torch

    import multibox.engine.sliced as sliced
    from multibox.data.dataset import read_image
    from multibox.data.formats.coco import load_coco
    from multibox.engine.checkpoint import load_checkpoint
    from multibox.metrics.coco import coco_evaluate

    torch.set_num_threads(1)
    loaded = load_checkpoint(checkpoint)
    network, input_size = loaded.detector.eval(), tuple(loaded.config.data.input_size)
    network.settings = dataclasses.replace(network.settings, max_detections=100)  # as Detector(max_det=100)
    dataset = load_coco(val / "images", val / "annotations.json")
    records = dataset.records[:frames] if frames else dataset.records
    captured: list = []
    real_merge = sliced._merge_frame
    sliced._merge_frame = lambda parts, frame, detector, slicing: captured.append((parts, frame)) or {}  # type: ignore
    variants: dict[str, tuple[list, list]] = {
        n: ([], []) for n in ("sliced", "sliced-merge", "sliced+full", "sliced-merge+full")
    }
    lookup = torch.tensor([0, *loaded.category_ids])
    for record in records:
        image = read_image(record.file, (record.height, record.width))
        captured.clear()
        start = time.perf_counter()
        slicing = sliced.Slicing(tuple(TILE), 0.2, True, "nms")
        sliced.detect_sliced(network, [sliced.frame_tensor(image, torch.device("cpu"))], input_size, slicing, 32)
        forward = time.perf_counter() - start
        parts, frame = captured[0]
        tiles = max(tile_id for _, _, tile_id in parts)  # the full-frame pass has the last id
        for name, (results, times) in variants.items():
            full = name.endswith("+full")
            chosen = parts if full else [p for p in parts if p[2] != tiles]
            start = time.perf_counter()
            merge = "merge" if "merge" in name else "nms"
            found = real_merge(chosen, frame, network, sliced.Slicing(tuple(TILE), 0.2, full, merge))
            times.append(forward * (tiles + full) / (tiles + 1) + time.perf_counter() - start)
            keep = found["scores"] >= 0.01
            rows = zip(
                found["boxes"][keep].tolist(),
                found["scores"][keep].tolist(),
                lookup[found["labels"][keep]].tolist(),
                strict=True,
            )
            results += [
                {
                    "image_id": int(record.image_id),
                    "category_id": int(label),
                    "score": float(score),
                    "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                }
                for box, score, label in rows
            ]
    gt, ids = dataset.to_coco_gt(), {int(r.image_id) for r in records}
    gt = {
        **gt,
        "images": [i for i in gt["images"] if i["id"] in ids],
        "annotations": [a for a in gt["annotations"] if a["image_id"] in ids],
    }
    epoch = int(torch.load(checkpoint, map_location="cpu", weights_only=False).get("epoch", -1)) + 1
    out = []
    for name, (results, times) in variants.items():
        metrics = coco_evaluate(gt, results, loaded.class_names)
        out.append(
            {
                "variant": name,
                "epochs_trained": epoch,
                "frames": len(records),
                **{k: round(float(metrics[k]), 4) for k in ("map", "map_50", "map_small", "map_medium", "map_large")},
                "latency_ms": round(1000 * statistics.median(times), 1),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                "load": round(os.getloadavg()[0], 2),
            }
        )
    return out


VARIANTS = ["down", "native", "sliced", "sliced-merge", "sliced-merge+full"]


def run(
    root: Path,
    epochs: int,
    batch: int,
    skip_train: bool,
    checkpoints: dict[str, Path] | None = None,
    frames: int = 0,
    variants: list[str] | None = None,
) -> None:
    rows: list[dict] = []
    for arm in ("down", "tiled"):
        if not skip_train:
            rows.append(train_arm(root, arm, epochs, batch))
            print(json.dumps(rows[-1]), flush=True)
    for variant in variants or VARIANTS:
        arm = "down" if variant == "down" else "tiled"
        checkpoint = (checkpoints or {}).get(arm) or root / f"arm_{arm}" / "checkpoints" / "last.ckpt"
        out = subprocess.run(
            [sys.executable, __file__, "eval", str(checkpoint), str(root / "val"), variant, str(frames)],
            check=True,
            capture_output=True,
            text=True,
        )
        rows.append({"arm": arm, **json.loads(out.stdout.strip().splitlines()[-1])})
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "all_metrics"}), flush=True)
    (root / f"results_{int(time.time())}.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    go = sub.add_parser("run")
    go.add_argument("--root", type=Path, required=True, help="holds train/ and val/ (multibox data synth)")
    go.add_argument("--epochs", type=int, default=8)
    go.add_argument("--batch", type=int, default=8)
    go.add_argument("--skip-train", action="store_true")
    go.add_argument("--down-ckpt", type=Path, help="evaluate this checkpoint of the down arm (default its last.ckpt)")
    go.add_argument("--tiled-ckpt", type=Path, help="evaluate this checkpoint of the tiled arm (default its last.ckpt)")
    go.add_argument("--frames", type=int, default=0, help="first N validation frames only (default all)")
    go.add_argument("--variants", default=",".join(VARIANTS))
    one = sub.add_parser("eval")
    one.add_argument("checkpoint", type=Path)
    one.add_argument("val", type=Path)
    one.add_argument("variant")
    one.add_argument("frames", type=int, nargs="?", default=0)
    all_sliced = sub.add_parser("sliced", help="the four sliced variants from one pass over the tiles")
    all_sliced.add_argument("checkpoint", type=Path)
    all_sliced.add_argument("val", type=Path)
    all_sliced.add_argument("frames", type=int, nargs="?", default=0)
    args = parser.parse_args()
    if args.command == "run":
        run(
            args.root,
            args.epochs,
            args.batch,
            args.skip_train,
            {"down": args.down_ckpt, "tiled": args.tiled_ckpt},
            args.frames,
            args.variants.split(","),
        )
    elif args.command == "sliced":
        for row in evaluate_sliced_variants(args.checkpoint, args.val, args.frames):
            print(json.dumps(row), flush=True)
    else:
        print(json.dumps(evaluate(args.checkpoint, args.val, args.variant, args.frames)))


if __name__ == "__main__":
    main()
