"""Training step side by side with torchvision: same model, weights, images, targets, optimizer, batch.

One step = forward, loss (matching, encoding, hard negative mining), backward, SGD step.
  multibox:    DetectionModule(...)(images) + module.criterion(...), as DetectionModule.training_step does;
  torchvision: torchvision.models.detection.<model>(images, targets) in train mode (its own
               transform, anchor generator, per-image SSDMatcher and SSD.compute_loss).
torchvision's weights are loaded into multibox's detector (same state-dict layout), so both compute
the same function; the first step's losses are printed as a check. Images are fed at the model's size,
so torchvision's GeneralizedRCNNTransform resize is an identity interpolate (it still runs, with its
normalise and batching copy; multibox normalises inside the model).

    python benchmarks/bench_train_step.py                          # CPU, one thread, both models
    python benchmarks/bench_train_step.py --model ssdlite320_mobilenet_v3_large --batch 8 --profile
    python benchmarks/bench_train_step.py --device cuda --precision bf16 --channels-last --batch 32

Steps are interleaved (multibox, torchvision, multibox, ...) after warm-up; the table gives medians.
Peak memory: CUDA max allocated per side; on the CPU the peak RSS growth of a fresh process running
that side alone (``--memory-of SIDE`` is that child).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext

import torch
import torchvision.models.detection as tvdet
from memory import reset_peak_rss, status_mb
from torchvision.ops import box_iou

from multibox.config import load_config
from multibox.engine.module import DetectionModule

MODELS = {"ssd300_vgg16": 300, "ssdlite320_mobilenet_v3_large": 320}
CPU_BATCH = {"ssd300_vgg16": 4, "ssdlite320_mobilenet_v3_large": 8}
NUM_CLASSES = 91  # COCO, background included


def make_batch(batch: int, size: int, seed: int = 0) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """Images (N, 3, S, S) in [0, 1] and 1-7 random boxes per image in pixels, labels 1..90."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 3, size, size, generator=g)
    targets = []
    for _ in range(batch):
        n = int(torch.randint(1, 8, (1,), generator=g))
        centre = torch.rand(n, 2, generator=g) * 0.6 + 0.2
        half = (torch.rand(n, 2, generator=g) * 0.3 + 0.03) * size
        boxes = torch.cat((centre * size - half, centre * size + half), 1).clamp(0, size)
        targets.append({"boxes": boxes, "labels": torch.randint(1, NUM_CLASSES, (n,), generator=g)})
    return images, targets


def padded_targets(targets: list[dict[str, torch.Tensor]], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """multibox's batch layout: (N, G, 4) normalised xyxy and (N, G) labels, 0 = padding."""
    g = max(len(t["labels"]) for t in targets)
    boxes = torch.zeros(len(targets), g, 4)
    labels = torch.zeros(len(targets), g, dtype=torch.long)
    for i, t in enumerate(targets):
        boxes[i, : len(t["labels"])] = t["boxes"] / size
        labels[i, : len(t["labels"])] = t["labels"]
    return boxes, labels


def build_pair(name: str) -> tuple[torch.nn.Module, DetectionModule]:
    """torchvision's model (random init) and multibox's DetectionModule carrying the same weights."""
    torch.manual_seed(0)
    reference = getattr(tvdet, name)(weights=None, weights_backbone=None, num_classes=NUM_CLASSES)
    size = MODELS[name]
    config = load_config(None, [f"model.name={name}", f"data.input_size=[{size},{size}]", "optimizer.name=sgd"])
    module = DetectionModule(config.to_dict(), [f"c{i}" for i in range(1, NUM_CLASSES)], list(range(1, NUM_CLASSES)))
    module.detector.model.load_state_dict(reference.state_dict(), strict=True)
    return reference, module


class Side:
    """One side's step on fixed inputs: forward + loss + backward + SGD."""

    def __init__(self, name: str, kind: str, args: argparse.Namespace, shared: tuple | None = None) -> None:
        reference, module = shared or build_pair(name)
        size = MODELS[name]
        self.device = torch.device(args.device)
        fmt = torch.channels_last if args.channels_last in (kind, "both") else torch.contiguous_format
        images, targets = make_batch(args.batch, size)
        self.images = images.to(self.device).contiguous(memory_format=fmt)
        self.kind = kind
        model = module if kind == "multibox" else reference
        self.model = model.to(self.device, memory_format=fmt).train()
        if args.compile in (kind, "both"):  # as train.compile does: the network, in place (same parameters)
            (module.detector.model if kind == "multibox" else reference).compile()
        if kind == "multibox":
            boxes, labels = padded_targets(targets, size)
            self.boxes, self.labels = boxes.to(self.device), labels.to(self.device)
        else:
            self.image_list = list(self.images.unbind(0))
            self.targets = [{k: v.to(self.device) for k, v in t.items()} for t in targets]
        cfg = module.config.optimizer  # the same SGD settings for both
        self.optimizer = torch.optim.SGD(
            model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
        bf16 = args.precision == "bf16"
        self.autocast = lambda: torch.autocast(self.device.type, torch.bfloat16) if bf16 else nullcontext()

    def losses(self) -> dict[str, torch.Tensor]:
        with self.autocast():
            if self.kind == "multibox":
                m = self.model
                return m.criterion(*m(self.images), m.detector.default_boxes, self.boxes, self.labels)
            out = self.model(self.image_list, self.targets)
            return {"loss": out["bbox_regression"] + out["classification"], **out}

    def step(self) -> torch.Tensor:
        loss = self.losses()["loss"]
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss


class LossOnly:
    """Target assignment + loss + its backward on fixed head outputs: where the two codes differ most."""

    def __init__(self, side: Side) -> None:
        self.side = side
        model = side.model
        with torch.no_grad():
            if side.kind == "multibox":
                self.head = model(side.images)
            else:
                self.image_batch, self.targets = model.transform(side.image_list, side.targets)
                self.features = list(model.backbone(self.image_batch.tensors).values())
                out = model.head(self.features)
                self.head = (out["bbox_regression"], out["cls_logits"])
        self.device = side.device

    def step(self) -> torch.Tensor:
        regression, logits = (t.detach().requires_grad_() for t in self.head)
        model = self.side.model
        if self.side.kind == "multibox":
            loss = model.criterion(regression, logits, model.detector.default_boxes, self.side.boxes, self.side.labels)[
                "loss"
            ]
        else:  # torchvision's SSD.forward from the anchors on
            anchors = model.anchor_generator(self.image_batch, self.features)
            matched = [
                model.proposal_matcher(box_iou(t["boxes"], a)) for a, t in zip(anchors, self.targets, strict=True)
            ]
            out = model.compute_loss(
                self.targets, {"bbox_regression": regression, "cls_logits": logits}, anchors, matched
            )
            loss = out["bbox_regression"] + out["classification"]
        loss.backward()
        return loss


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(sides: dict[str, Side | LossOnly], warmup: int, steps: int) -> dict[str, list[float]]:
    """Seconds per step for each side, alternating sides so load changes hit both alike."""
    times: dict[str, list[float]] = {k: [] for k in sides}
    for i in range(warmup + steps):
        for kind, side in sides.items():
            synchronise(side.device)
            start = time.perf_counter()
            side.step()
            synchronise(side.device)
            if i >= warmup:
                times[kind].append(time.perf_counter() - start)
    return times


def peak_memory_mb(name: str, kind: str, args: argparse.Namespace) -> float:
    """Peak memory of one side's steps: CUDA max allocated, or a child process's RSS growth on the CPU."""
    if args.device == "cuda":
        side = Side(name, kind, args)
        side.step()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        side.step()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    command = [sys.executable, __file__, "--model", name, "--batch", str(args.batch), "--memory-of", kind]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_mb"]


def child_memory(name: str, kind: str, args: argparse.Namespace) -> None:
    """Print the peak RSS growth (MiB) over one step of one side, measured from after its setup."""
    side = Side(name, kind, args)
    base = reset_peak_rss()
    side.step()  # the first step also allocates the gradients and SGD's momentum buffers
    print(json.dumps({"peak_mb": peak_rss_mb() - base}))


def peak_rss_mb() -> float:
    return status_mb("VmHWM")


def profile(side: Side, steps: int = 3) -> str:
    side.step()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(steps):
        side.step()
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(25)
    return text.getvalue()


def run_model(name: str, args: argparse.Namespace) -> list[str]:
    shared = build_pair(name)
    sides = {kind: Side(name, kind, args, shared) for kind in ("multibox", "torchvision")}
    with torch.no_grad():
        first = {kind: float(side.losses()["loss"]) for kind, side in sides.items()}
    print(
        f"{name}: first-step loss multibox {first['multibox']:.5f} torchvision {first['torchvision']:.5f}",
        file=sys.stderr,
    )
    loss_times = interleaved({k: LossOnly(side) for k, side in sides.items()}, 2, 10)
    loss_med = {k: statistics.median(v) * 1000 for k, v in loss_times.items()}
    if args.profile:
        for kind, side in sides.items():
            print(f"--- cProfile {name} {kind}\n{profile(side)}", file=sys.stderr)
    times = interleaved(sides, args.warmup, args.steps)
    med = {k: statistics.median(v) for k, v in times.items()}
    memory = (
        {k: peak_memory_mb(name, k, args) for k in sides} if not args.no_memory else {k: float("nan") for k in sides}
    )
    ips = {k: args.batch / med[k] for k in sides}
    return [
        f"| {name} step (s), batch {args.batch} "
        f"| {med['multibox']:.3f} ({min(times['multibox']):.3f}–{max(times['multibox']):.3f}) "
        f"| {med['torchvision']:.3f} ({min(times['torchvision']):.3f}–{max(times['torchvision']):.3f}) "
        f"| {med['torchvision'] / med['multibox']:.2f}× |",
        f"| {name} target assignment + loss, fwd + bwd (ms) "
        f"| {loss_med['multibox']:.1f} | {loss_med['torchvision']:.1f} "
        f"| {loss_med['torchvision'] / loss_med['multibox']:.2f}× |",
        f"| {name} images/s | {ips['multibox']:.2f} | {ips['torchvision']:.2f} "
        f"| {ips['multibox'] / ips['torchvision']:.2f}× |",
        f"| {name} peak memory (MiB) | {memory['multibox']:.0f} | {memory['torchvision']:.0f} "
        f"| {memory['multibox'] / memory['torchvision']:.2f} (multibox / torchvision) |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=[*MODELS, "all"], default="all")
    parser.add_argument("--batch", type=int, help="default: 4 (SSD300) / 8 (SSDLite) on the CPU, 32 on CUDA")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per side")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument(
        "--channels-last",
        nargs="?",
        const="both",
        default="none",
        choices=["none", "multibox", "torchvision", "both"],
        help="channels_last memory format for these sides (no value: both)",
    )
    parser.add_argument(
        "--compile",
        choices=["none", "multibox", "torchvision", "both"],
        default="none",
        help="torch.compile (inductor) the network of these sides; give --warmup 2 or more",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads on the CPU")
    parser.add_argument("--profile", action="store_true", help="cProfile headline of each side to stderr")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--memory-of", choices=["multibox", "torchvision"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = list(MODELS) if args.model == "all" else [args.model]
    if args.memory_of:
        args.batch = args.batch or CPU_BATCH[names[0]]
        return child_memory(names[0], args.memory_of, args)
    rows = []
    for name in names:
        model_args = argparse.Namespace(**vars(args))
        model_args.batch = args.batch or (32 if args.device == "cuda" else CPU_BATCH[name])
        rows += run_model(name, model_args)
    print(
        f"\n{platform.processor() or platform.machine()}, torch {torch.__version__}, device {args.device}, "
        f"{args.precision}, channels_last={args.channels_last}, threads={torch.get_num_threads()}, "
        f"median of {args.steps} interleaved steps after {args.warmup} warm-up, load {os.getloadavg()[0]:.2f}\n"
    )
    print("| case | multibox | torchvision | ratio (torchvision / multibox time) |\n|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
