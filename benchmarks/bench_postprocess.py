"""Postprocess (decode + score threshold + top-k + NMS) per batch, side by side with torchvision.

  multibox:    multibox.boxes.postprocess.postprocess, the whole batch at once;
  torchvision: SSD.postprocess_detections (per image: decode, per class threshold + top-k, then
               batched_nms over the image's classes) — the code torchvision's SSD runs in eval mode.
Peak memory: CUDA max allocated; on the CPU the peak RSS growth of one call in a fresh process.
Both get the same raw head outputs for SSD300 (8,732 default boxes, 91 classes, batch 32 by default)
with torchvision's SSD300 settings (score 0.01, NMS 0.45, top-k 400, 200 per image). The detections
are checked to be the same before timing.

Scores: logits drawn so that a realistic few hundred boxes per class pass 0.01 (``--spread`` sets how
many; the table prints the mean count per image and class).

    python benchmarks/bench_postprocess.py
    python benchmarks/bench_postprocess.py --device cuda --batch 64
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from types import SimpleNamespace

import torch
from memory import reset_peak_rss, status_mb
from torchvision.models.detection._utils import BoxCoder as TorchvisionBoxCoder
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.ssd import SSD as TorchvisionSSD
from torchvision.ops import box_convert

from multibox.boxes.postprocess import PostprocessSettings, postprocess

SIZE = 300
NUM_CLASSES = 91


def ssd300_defaults() -> torch.Tensor:
    """SSD300's 8,732 default boxes (cxcywh, normalised), from torchvision's own generator."""
    generator = DefaultBoxGenerator(
        [[2], [2, 3], [2, 3], [2, 3], [2], [2]],
        scales=[0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05],
        steps=[8, 16, 32, 64, 100, 300],
    )
    sizes = [(38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)]
    return generator._grid_default_boxes(sizes, [SIZE, SIZE])


def head_outputs(batch: int, num_defaults: int, spread: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Offsets ~ N(0, 0.5) and peaky logits: background high, a heavy tail of foreground logits."""
    g = torch.Generator().manual_seed(seed)
    regression = torch.randn(batch, num_defaults, 4, generator=g) * 0.5
    logits = torch.randn(batch, num_defaults, NUM_CLASSES, generator=g) * spread
    logits[..., 0] += 7.0
    return regression, logits


def torchvision_postprocess(settings: PostprocessSettings) -> Callable:
    fake = SimpleNamespace(
        box_coder=TorchvisionBoxCoder((10.0, 10.0, 5.0, 5.0)),
        score_thresh=settings.score_threshold,
        topk_candidates=settings.topk_candidates,
        nms_thresh=settings.nms_threshold,
        detections_per_img=settings.max_detections,
    )

    def run(
        regression: torch.Tensor, logits: torch.Tensor, anchors_xyxy: torch.Tensor
    ) -> list[dict[str, torch.Tensor]]:
        n = len(regression)
        head = {"bbox_regression": regression, "cls_logits": logits}
        return TorchvisionSSD.postprocess_detections(fake, head, [anchors_xyxy] * n, [(SIZE, SIZE)] * n)

    return run


def _canonical(d: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detections by score, then label: equal scores of different classes may come in either order."""
    by_label = torch.argsort(d["labels"], stable=True)
    order = by_label[torch.argsort(d["scores"][by_label], descending=True, stable=True)]
    return {k: v[order] for k, v in d.items()}


def check_same(ours: list[dict], theirs: list[dict]) -> None:
    for i, (a, b) in enumerate(zip(map(_canonical, ours), map(_canonical, theirs), strict=True)):
        if (
            len(a["scores"]) != len(b["scores"])
            or not torch.equal(a["labels"], b["labels"])
            or not torch.allclose(a["boxes"], b["boxes"], atol=1e-3)
            or not torch.allclose(a["scores"], b["scores"])
        ):
            sys.exit(f"image {i}: detections differ from torchvision's")


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(
    calls: dict[str, Callable[[], object]], device: torch.device, warmup: int, repeats: int
) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {k: [] for k in calls}
    for i in range(warmup + repeats):
        for name, call in calls.items():
            synchronise(device)
            start = time.perf_counter()
            call()
            synchronise(device)
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def peak_memory_mb(side: str, call: Callable[[], object], args: argparse.Namespace) -> float:
    """CUDA: max allocated during one call. CPU: peak RSS growth of one call in a fresh child process."""
    if args.device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        call()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    command = [sys.executable, __file__, "--batch", str(args.batch), "--spread", str(args.spread), "--memory-of", side]
    return float(subprocess.run(command, check=True, capture_output=True, text=True).stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--spread", type=float, default=1.2, help="std of the foreground logits")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--memory-of", choices=["multibox", "torchvision"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    settings = PostprocessSettings(score_threshold=0.01, nms_threshold=0.45, topk_candidates=400, max_detections=200)
    defaults = ssd300_defaults().to(device)
    anchors = box_convert(defaults, "cxcywh", "xyxy") * SIZE
    regression, logits = (t.to(device) for t in head_outputs(args.batch, len(defaults), args.spread))
    sizes = torch.tensor([[SIZE, SIZE]] * args.batch, device=device)
    passing = (torch.softmax(logits, -1)[..., 1:] > settings.score_threshold).sum(1).float().mean()
    reference = torchvision_postprocess(settings)
    calls = {
        "multibox": lambda: postprocess(regression, logits, defaults, sizes, settings),
        "torchvision": lambda: reference(regression, logits, anchors),
    }
    if args.memory_of:
        base = reset_peak_rss()
        calls[args.memory_of]()
        return print(status_mb("VmHWM") - base)
    memory = {k: peak_memory_mb(k, c, args) for k, c in calls.items()}
    check_same(calls["multibox"](), calls["torchvision"]())
    times = interleaved(calls, device, warmup=1, repeats=args.repeats)
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    kept = sum(len(d["scores"]) for d in calls["multibox"]()) / args.batch

    print(
        f"\n{platform.machine()}, torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}, "
        f"batch {args.batch} x 8,732 boxes x {NUM_CLASSES} classes, {passing:.0f} boxes per image and class pass 0.01, "
        f"{kept:.0f} detections per image; median of {args.repeats} interleaved runs, load {os.getloadavg()[0]:.2f}\n"
    )
    print("| case | multibox | torchvision | ratio |\n|---|---|---|---|")
    spread = {k: f"({min(v) * 1000:.0f}–{max(v) * 1000:.0f})" for k, v in times.items()}
    print(
        f"| postprocess, batch {args.batch} (ms) | {med['multibox']:.0f} {spread['multibox']} | "
        f"{med['torchvision']:.0f} {spread['torchvision']} | {med['torchvision'] / med['multibox']:.2f}× |"
    )
    print(f"| peak memory (MiB) | {memory['multibox']:.0f} | {memory['torchvision']:.0f} | |")


if __name__ == "__main__":
    main()
