"""End-to-end training epoch with the real input pipeline against the same epoch on pre-loaded tensors.

Data: synthetic JPEGs (``make_synthetic_dataset``, quality 95) read from disk by the real
``DetectionDataModule`` train loader (OpenCV decode, the ``ssd`` augmentation preset, collate,
worker processes). Model: configs/demo.yaml's (custom SSDLite, MobileNetV3 x0.5, 128x128, batch 16),
trained with its DetectionModule's loss and optimizer; the loop is plain PyTorch so only the input
pipeline differs between the two modes:

  loader:     for batch in train_dataloader(): step(batch)
  pre-loaded: the batches of one loader epoch kept in memory, then: for batch in batches: step(batch)

Modes alternate (loader, pre-loaded, loader, ...). "Compute" is the time inside the steps;
utilisation = compute / epoch time, so the input pipeline's stalls show as the rest.

    python benchmarks/bench_epoch.py                       # 320 images 320x240, workers = cores - 1
    python benchmarks/bench_epoch.py --images 640 --workers 3 --augment none
    python benchmarks/bench_epoch.py --device cuda --decode gpu   # data.decode=gpu: nvJPEG + transforms.v2 on the GPU

With ``--decode gpu`` the loader yields encoded files and the loader mode decodes and augments each batch
on ``--device`` (``DetectionDataModule.prepare_batch``) inside the epoch, outside "compute"; the pre-loaded
mode replays batches already decoded there.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from memory import reset_peak_rss, status_mb

from multibox.config import load_config
from multibox.data.datamodule import DetectionDataModule
from multibox.data.synth import make_synthetic_dataset
from multibox.engine.module import DetectionModule, images_to_float

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def make_data(num_images: int, size: tuple[int, int]) -> Path:
    folder = Path(tempfile.gettempdir()) / f"multibox_bench_epoch_{num_images}_{size[0]}x{size[1]}"
    if not (folder / "annotations.json").exists():
        make_synthetic_dataset(folder, num_images, size, seed=0)
    return folder


def run_epoch(
    module: DetectionModule,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[dict],
    prepare: Callable[[dict], dict] = lambda batch: batch,
) -> tuple[float, float, int]:
    """(epoch seconds, seconds inside training steps, images) for one pass over `batches`."""
    compute, images = 0.0, 0
    start = time.perf_counter()
    for batch in batches:
        batch = prepare(batch)
        synchronise(batch["images"].device)
        step_start = time.perf_counter()
        out = module.criterion(
            *module.detector(images_to_float(batch["images"])),
            module.detector.default_boxes,
            batch["boxes"],
            batch["labels"],
        )
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimizer.step()
        synchronise(batch["images"].device)
        compute += time.perf_counter() - step_start
        images += batch["images"].shape[0]
    return time.perf_counter() - start, compute, images


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=320)
    parser.add_argument("--size", default="240x320", help="HxW of the JPEGs on disk")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    parser.add_argument("--augment", default="ssd")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per mode, after one warm-up epoch")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the training process")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--decode", choices=["cpu", "gpu"], default="cpu", help="data.decode (gpu: on --device)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    height, width = (int(v) for v in args.size.split("x"))
    data = make_data(args.images, (height, width))
    config = load_config(
        CONFIG,
        [
            f"data.train.images={data / 'images'}",
            f"data.train.annotations={data / 'annotations.json'}",
            f"data.num_workers={args.workers}",
            f"data.augment={args.augment}",
            f"data.decode={args.decode}",
        ],
    )
    device = torch.device(args.device)
    datamodule = DetectionDataModule(config)
    module = DetectionModule(config.to_dict(), datamodule.class_names, datamodule.category_ids).to(device).train()
    optimizer = torch.optim.AdamW(
        module.parameters(), lr=config.optimizer.lr, weight_decay=config.optimizer.weight_decay
    )
    loader = datamodule.train_dataloader()
    prepare = lambda batch: datamodule.prepare_batch(batch, device)  # noqa: E731  (decode=gpu: decode + augment)
    preloaded = [prepare(batch) for batch in loader]  # also a warm-up epoch of the loader
    run_epoch(module, optimizer, preloaded[:2])  # warm-up of the step itself

    results: dict[str, list[tuple[float, float, int]]] = {"loader": [], "pre-loaded": []}
    memory = {"loader": 0.0, "pre-loaded": 0.0}
    for _ in range(args.epochs):
        for mode, batches, ready in (("loader", loader, prepare), ("pre-loaded", preloaded, lambda b: b)):
            base = reset_peak_rss()
            results[mode].append(run_epoch(module, optimizer, batches, ready))
            memory[mode] = max(memory[mode], status_mb("VmHWM") - base)

    epoch = {k: statistics.median(r[0] for r in v) for k, v in results.items()}
    util = {k: statistics.median(r[1] / r[0] for r in v) for k, v in results.items()}
    images = results["loader"][0][2]
    print(
        f"\n{platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, "
        f"{args.workers} loader workers, {images} images per epoch ({height}x{width} JPEG -> 128x128, augment "
        f"{args.augment}, decode {args.decode}, batch {config.data.batch_size}, {device}), "
        f"median of {args.epochs} epochs per mode, "
        f"load {os.getloadavg()[0]:.2f}\n"
    )
    print("| case | real loader | pre-loaded tensors | ratio |\n|---|---|---|---|")
    print(
        f"| epoch (s) | {epoch['loader']:.2f} | {epoch['pre-loaded']:.2f} "
        f"| {epoch['loader'] / epoch['pre-loaded']:.2f}× |"
    )
    print(f"| images/s | {images / epoch['loader']:.1f} | {images / epoch['pre-loaded']:.1f} | |")
    print(f"| utilisation (step time / epoch time) | {util['loader']:.0%} | {util['pre-loaded']:.0%} | |")
    print(
        f"| peak memory of the training process (MiB, growth over the epoch) | {memory['loader']:.0f} "
        f"| {memory['pre-loaded']:.0f} | |"
    )


if __name__ == "__main__":
    main()
