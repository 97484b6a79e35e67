"""Training input pipeline speed: decode + `ssd` augmentation + collate, 640x480 JPEGs -> 300x300.

Compares, single-process and single-threaded on one core:
  (a) multibox: DetectionDataset (OpenCV decode + `ssd` preset) + collate_detections, batches of 32;
  (b) torchvision.transforms.v2, the detection reference's `ssd` recipe (RandomPhotometricDistort,
      RandomZoomOut(fill=mean), RandomIoUCrop, RandomHorizontalFlip, Resize((300, 300)),
      SanitizeBoundingBoxes) on tv_tensors, decoding with torchvision.io.decode_jpeg, stacking collate;
  (c) multibox `none` preset (decode + resize only), a floor.

    python benchmarks/bench_input_pipeline.py                 # single core, prints a markdown table
    python benchmarks/bench_input_pipeline.py --workers 2     # also: the real DataLoader with 2 workers
    python benchmarks/bench_input_pipeline.py --profile       # cProfile of (a): top costs

Data: N synthetic 640x480 JPEGs with boxes, written once to --data (or a temp folder).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import platform
import pstats
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import cv2
import torch

from multibox.data.dataset import DetectionDataset, collate_detections
from multibox.data.formats.coco import load_coco
from multibox.data.synth import make_synthetic_dataset
from multibox.data.transforms import MEAN_RGB, build_train_transform

SIZE = (300, 300)


def make_data(folder: Path | None, num_images: int, seed: int = 0) -> Path:
    folder = Path(folder) if folder else Path(tempfile.gettempdir()) / f"multibox_bench_input_{num_images}_{seed}"
    if not (folder / "annotations.json").exists():
        make_synthetic_dataset(folder, num_images, (480, 640), seed)
    return folder


def multibox_dataset(data: Path, preset: str) -> DetectionDataset:
    records = load_coco(data / "images", data / "annotations.json")
    return DetectionDataset(records, build_train_transform(preset, SIZE, seed=0), SIZE)


class TorchvisionDataset(torch.utils.data.Dataset):
    """torchvision's detection reference, `ssd` preset, in transforms.v2 with tv_tensors."""

    def __init__(self, data: Path):
        from torchvision import tv_tensors
        from torchvision.io import decode_jpeg, read_file
        from torchvision.transforms import v2 as T

        self.tv_tensors, self.decode_jpeg, self.read_file = tv_tensors, decode_jpeg, read_file
        self.records = load_coco(data / "images", data / "annotations.json").records
        self.transform = T.Compose(
            [
                T.RandomPhotometricDistort(),
                T.RandomZoomOut(fill=list(MEAN_RGB)),
                T.RandomIoUCrop(),
                T.RandomHorizontalFlip(),
                T.Resize(SIZE),
                T.SanitizeBoundingBoxes(),
            ]
        )

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        record = self.records[index]
        image = self.tv_tensors.Image(self.decode_jpeg(self.read_file(str(record.file))))
        keep = ~record.iscrowd
        target = {
            "boxes": self.tv_tensors.BoundingBoxes(
                torch.from_numpy(record.boxes[keep]), format="XYXY", canvas_size=image.shape[-2:]
            ),
            "labels": torch.from_numpy(record.labels[keep]),
        }
        return self.transform(image, target)


def stack_collate(batch: list[tuple[torch.Tensor, dict[str, Any]]]) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    images, targets = zip(*batch, strict=True)
    return torch.stack([torch.as_tensor(image) for image in images]), list(targets)


def batches(n: int, size: int) -> Iterable[list[int]]:
    return (list(range(i, min(i + size, n))) for i in range(0, n, size))


def time_epoch(dataset: Any, collate: Callable, batch_size: int) -> float:
    """Images per second of one pass over the dataset, in this process."""
    start = time.perf_counter()
    for indices in batches(len(dataset), batch_size):
        collate([dataset[i] for i in indices])
    return len(dataset) / (time.perf_counter() - start)


def measure(dataset: Any, collate: Callable, batch_size: int, repeats: int) -> list[float]:
    collate([dataset[i] for i in range(min(batch_size, len(dataset)))])  # warm-up
    return [time_epoch(dataset, collate, batch_size) for _ in range(repeats)]


def measure_loader(dataset: Any, collate: Callable, batch_size: int, workers: int, repeats: int) -> list[float]:
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        collate_fn=collate,
        persistent_workers=workers > 0,
    )
    for _ in loader:  # warm-up epoch (starts the workers)
        pass
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        n = sum(len(batch[0]) if isinstance(batch, tuple) else len(batch["images"]) for batch in loader)
        rates.append(n / (time.perf_counter() - start))
    return rates


def spread(rates: list[float]) -> str:
    return f"{statistics.median(rates):.0f} ({min(rates):.0f}–{max(rates):.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="dataset folder (made there if missing; default: a temp folder)")
    parser.add_argument("--num-images", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=0, help="also time the real DataLoader with this many workers")
    parser.add_argument("--profile", action="store_true", help="cProfile one pass of (a) and print the top costs")
    args = parser.parse_args()

    data = make_data(args.data, args.num_images)
    affinity = sorted(os.sched_getaffinity(0))
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    os.sched_setaffinity(0, {affinity[0]})  # one core for the single-process numbers

    ssd, tv, none = multibox_dataset(data, "ssd"), TorchvisionDataset(data), multibox_dataset(data, "none")
    if args.profile:
        profiler = cProfile.Profile()
        measure(ssd, collate_detections, args.batch_size, 0)
        profiler.enable()
        time_epoch(ssd, collate_detections, args.batch_size)
        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(20)
        print(out.getvalue())

    rows = {
        "(a) multibox `ssd` (OpenCV decode + albumentations)": measure(
            ssd, collate_detections, args.batch_size, args.repeats
        ),
        "(b) torchvision v2 reference `ssd` (decode_jpeg + v2)": measure(
            tv, stack_collate, args.batch_size, args.repeats
        ),
        "(c) multibox `none` (decode + resize)": measure(none, collate_detections, args.batch_size, args.repeats),
    }
    (a, b) = (statistics.median(rows[k]) for k in list(rows)[:2])
    print(
        f"\n{len(ssd)} images 640x480 -> {SIZE[0]}x{SIZE[1]}, batch {args.batch_size}, one core (cpu {affinity[0]}), "
        f"1 thread, median (min–max) of {args.repeats}; {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, OpenCV {cv2.__version__}\n"
    )
    print("| pipeline | images/s per core |\n|---|---|")
    for name, rates in rows.items():
        print(f"| {name} | {spread(rates)} |")
    print(f"| ratio (a)/(b) | {a / b:.2f}× |")
    print(
        f"\ntargets: (a) >= 100 images/s per core: {'met' if a >= 100 else 'NOT met'}; "
        f"(a) >= 3x (b): {'met' if a >= 3 * b else 'NOT met'}"
    )

    if args.workers:
        os.sched_setaffinity(0, set(affinity))
        print(
            f"\nDataLoader, {args.workers} workers, {len(affinity)} cores allowed, batch {args.batch_size}, shuffled:\n"
        )
        print("| pipeline | images/s |\n|---|---|")
        ours = measure_loader(ssd, collate_detections, args.batch_size, args.workers, args.repeats)
        print(f"| (a) multibox `ssd` | {spread(ours)} |")
        theirs = measure_loader(tv, stack_collate, args.batch_size, args.workers, args.repeats)
        print(f"| (b) torchvision v2 `ssd` | {spread(theirs)} |")


if __name__ == "__main__":
    main()
