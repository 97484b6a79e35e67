"""`multibox demo` (and `make demo`): synthetic data → training → COCO evaluation → predictions.

Everything runs on the CPU in a few minutes from the embedded ``configs/demo.yaml``, so a
newcomer sees every layer of multibox work before bringing their own data.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from multibox.config import load_config
from multibox.data.synth import make_synthetic_dataset
from multibox.engine.train import train
from multibox.inference.predict import predict
from multibox.metrics.coco import print_metrics

DEMO_CONFIG = Path(__file__).parent / "configs" / "demo.yaml"
TRAIN_IMAGES, VAL_IMAGES, IMAGE_SIZE = 600, 100, (128, 128)
OBJECT_SIZES = (0.15, 0.5)  # fractions of the image side: 19-64 px shapes


def _fresh_run_dir(out: Path) -> Path:
    """`out/run`, or `out/run-2`, ... so a second demo never overwrites the first one's outputs."""
    candidate, index = out / "run", 1
    while candidate.exists():
        index += 1
        candidate = out / f"run-{index}"
    return candidate


def _ensure_data(data_dir: Path, console: Console) -> None:
    for split, count, seed in (("train", TRAIN_IMAGES, 0), ("val", VAL_IMAGES, 1)):
        if not (data_dir / split / "annotations.json").is_file():
            console.print(f"generating {count} synthetic {split} images in {data_dir / split}")
            make_synthetic_dataset(data_dir / split, count, IMAGE_SIZE, seed, object_sizes=OBJECT_SIZES)


def run_demo(out: Path, overrides: list[str] | None = None) -> dict:
    console = Console()
    started = time.perf_counter()
    data_dir = out / "data"
    _ensure_data(data_dir, console)
    run_dir = _fresh_run_dir(out)
    paths = [
        f"data.train.images={data_dir / 'train' / 'images'}",
        f"data.train.annotations={data_dir / 'train' / 'annotations.json'}",
        f"data.val.images={data_dir / 'val' / 'images'}",
        f"data.val.annotations={data_dir / 'val' / 'annotations.json'}",
        f"train.output_dir={run_dir}",
    ]
    config = load_config(DEMO_CONFIG, paths + list(overrides or []))
    console.print(f"training {config.model.name} for {config.train.epochs} epochs on the CPU; outputs in {run_dir}")
    metrics = train(config)
    assert metrics is not None  # the demo has a val set and trains in this one process
    prediction_dir = run_dir / "predictions"
    predict(run_dir / "checkpoints" / "best.ckpt", data_dir / "val" / "images", prediction_dir, conf=0.5)
    print_metrics(metrics, console)
    elapsed = time.perf_counter() - started
    console.print(
        f"[bold]demo done in {elapsed / 60:.1f} min: "
        f"mAP@[.5:.95] = {metrics['map']:.3f}, mAP@.5 = {metrics['map_50']:.3f}[/bold]\n"
        f"checkpoints, metrics.json, results.png and TensorBoard logs: {run_dir}\n"
        f"annotated predictions: {prediction_dir}\n"
        f"report (PR curves, confusion matrix, worst images): {run_dir / 'report.md'}"
    )
    return metrics
