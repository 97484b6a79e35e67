"""Inference speed: the network alone, the postprocess alone and both end to end, PyTorch next to
ONNX Runtime, per batch size and device.

Each stage runs on uint8 images at the model's input size, as an exported graph would get them.
ONNX Runtime runs the graphs ``multibox export`` writes (dynamic batch; ``--nms`` for the
postprocess), exported into a temporary folder. Timings are the median of ``repeat`` calls after
``warmup`` calls, with ``torch.cuda.synchronize`` around GPU calls.
"""

from __future__ import annotations

import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from torch import Tensor, nn

from multibox.errors import MultiboxError
from multibox.inference.export import (
    DecodeScores,
    ExportableDetector,
    SelectDetections,
    export_onnx,
    output_names,
)
from multibox.models.detector import SSDDetector

STAGES = ("model", "postprocess", "end-to-end")
RUNTIMES = ("pytorch", "onnxruntime")
_SHORT = {"pytorch": "torch", "onnxruntime": "ORT"}


@dataclass
class Timing:
    device: str
    runtime: str
    stage: str
    batch_size: int
    ms_per_batch: float

    @property
    def images_per_s(self) -> float:
        return 1000.0 * self.batch_size / self.ms_per_batch


class _RawModel(nn.Module):
    """uint8 images → raw (offsets, logits): the network alone, as ONNX Runtime runs it."""

    def __init__(self, detector: SSDDetector) -> None:
        super().__init__()
        self.model = detector.model

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        return self.model(images.float() / 255.0)


class _Postprocess(nn.Module):
    """Raw (offsets, logits) → fixed-size detections: decoding and NMS alone."""

    def __init__(self, detector: SSDDetector) -> None:
        super().__init__()
        self.decode = DecodeScores(detector)
        self.select = SelectDetections(detector)

    def forward(self, box_regression: Tensor, cls_logits: Tensor) -> tuple[Tensor, ...]:
        return self.select(*self.decode(box_regression, cls_logits))


def median_ms(call: Callable[[], Any], warmup: int, repeat: int, device: torch.device) -> float:
    """Median wall time of `call` in ms; CUDA work is synchronised so it is counted."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        call()
    sync()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        sync()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def _onnx_sessions(
    detector: SSDDetector, input_size: tuple[int, int], folder: Path, providers: list[str]
) -> dict[str, Any]:
    """One ONNX Runtime session per stage, from dynamic-batch exports of the detector."""
    import onnxruntime as ort

    images = torch.zeros(1, 3, *input_size, dtype=torch.uint8)
    with torch.no_grad():
        raw = detector(images.float())
    graphs = {
        "model": (_RawModel(detector), (images,), ["images"], ["box_regression", "cls_logits"]),
        "postprocess": (_Postprocess(detector), raw, ["box_regression", "cls_logits"], output_names(True)),
        "end-to-end": (ExportableDetector(detector, nms=True), (images,), ["images"], output_names(True)),
    }
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    sessions = {}
    for stage, (module, example, inputs, outputs) in graphs.items():
        path = folder / f"{stage.replace(' ', '_')}.onnx"
        export_onnx(module, example, path, inputs, outputs, dynamic_batch=True)
        sessions[stage] = ort.InferenceSession(str(path), options, providers=providers)
    return sessions


def _onnx_providers(device: torch.device) -> list[str] | None:
    """CPU always; CUDA only when this onnxruntime build has it (None: not available)."""
    import onnxruntime as ort

    if device.type == "cpu":
        return ["CPUExecutionProvider"]
    return ["CUDAExecutionProvider"] if "CUDAExecutionProvider" in ort.get_available_providers() else None


def _bench_batch(
    detector: SSDDetector, sessions: dict[str, Any], images: Tensor, device: torch.device, warmup: int, repeat: int
) -> list[Timing]:
    """Every stage on one batch of uint8 images, PyTorch on `device`, ONNX Runtime from host memory."""
    n, input_size = len(images), list(images.shape[-2:])
    on_device = images.to(device)
    sizes = torch.tensor([input_size] * n, device=device)
    box_regression, cls_logits = detector(on_device.float() / 255.0)
    pytorch = {
        "model": lambda: detector(on_device.float() / 255.0),
        "postprocess": lambda: detector.postprocess(box_regression, cls_logits, sizes),
        "end-to-end": lambda: detector.detect(on_device.float() / 255.0, sizes),
    }
    feeds = {
        "model": {"images": images.numpy()},
        "end-to-end": {"images": images.numpy()},
        "postprocess": {"box_regression": box_regression.cpu().numpy(), "cls_logits": cls_logits.cpu().numpy()},
    }
    timings = []
    for stage in STAGES:
        timings.append(Timing(device.type, "pytorch", stage, n, median_ms(pytorch[stage], warmup, repeat, device)))
        if stage in sessions:  # session.run returns when its outputs are on the host: nothing to synchronise
            run = partial(sessions[stage].run, None, feeds[stage])
            timings.append(
                Timing(device.type, "onnxruntime", stage, n, median_ms(run, warmup, repeat, torch.device("cpu")))
            )
    return timings


@torch.no_grad()
def _bench_device(
    detector: SSDDetector,
    input_size: tuple[int, int],
    batch_sizes: list[int],
    device: torch.device,
    warmup: int,
    repeat: int,
    onnx: bool,
) -> list[Timing]:
    timings = []
    with tempfile.TemporaryDirectory(prefix="multibox-bench-") as folder:
        providers = _onnx_providers(device) if onnx else None
        sessions = _onnx_sessions(detector.cpu().eval(), input_size, Path(folder), providers) if providers else {}
        detector = detector.to(device).eval()
        for n in batch_sizes:
            images = torch.randint(
                0, 256, (n, 3, *input_size), dtype=torch.uint8, generator=torch.Generator().manual_seed(n)
            )
            timings += _bench_batch(detector, sessions, images, device, warmup, repeat)
    return timings


def bench_devices(name: str) -> list[torch.device]:
    """'auto': the CPU, and the GPU too when there is one; else a comma-separated list."""
    if name == "auto":
        return [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    devices = [torch.device(part.strip()) for part in name.split(",") if part.strip()]
    if any(d.type == "cuda" for d in devices) and not torch.cuda.is_available():
        raise MultiboxError(f"--device: {name} asks for a GPU but torch sees none")
    return devices


def bench_detector(
    detector: SSDDetector,
    input_size: tuple[int, int],
    batch_sizes: list[int],
    device: str = "auto",
    warmup: int = 2,
    repeat: int = 10,
    onnx: bool = True,
) -> list[Timing]:
    """Timings of every stage, runtime, batch size and device."""
    if not batch_sizes or min(batch_sizes) < 1:
        raise MultiboxError(f"--batch-sizes: need positive sizes, got {batch_sizes}")
    if repeat < 1 or warmup < 0:
        raise MultiboxError(f"--repeat/--warmup: need repeat >= 1 and warmup >= 0, got {repeat} and {warmup}")
    timings = []
    for target in bench_devices(device):
        timings += _bench_device(detector, input_size, batch_sizes, target, warmup, repeat, onnx)
    return timings


def bench_table(timings: list[Timing], title: str) -> Table:
    """One row per (device, batch, stage); ms per batch and images/s per runtime."""
    table = Table(title=title, caption="ms/batch: median per call; ORT: ONNX Runtime")
    for column in ("device", "batch", "stage"):
        table.add_column(column)
    for runtime in RUNTIMES:
        table.add_column(f"{_SHORT[runtime]} ms/batch", justify="right")
        table.add_column(f"{_SHORT[runtime]} img/s", justify="right")
    found = {(t.device, t.batch_size, t.stage, t.runtime): t for t in timings}
    for device, n, stage in dict.fromkeys((t.device, t.batch_size, t.stage) for t in timings):
        cells = []
        for runtime in RUNTIMES:
            t = found.get((device, n, stage, runtime))
            cells += [f"{t.ms_per_batch:.2f}", f"{t.images_per_s:.1f}"] if t else ["–", "–"]
        table.add_row(device, str(n), stage, *cells)
    return table


def machine_info() -> dict[str, Any]:
    import onnxruntime as ort

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def bench_command(
    weights: Path | None,
    config_path: Path | None,
    overrides: list[str],
    batch_sizes: str,
    device: str,
    warmup: int,
    repeat: int,
    json_out: Path | None,
    onnx: bool = True,
) -> list[Timing]:
    """`multibox bench`: a checkpoint's detector, or a random-init one built from a config."""
    from multibox.config import load_config

    if (weights is None) == (config_path is None):
        raise MultiboxError("bench: give exactly one of --weights CKPT or -c CONFIG")
    try:
        sizes = [int(part) for part in batch_sizes.split(",") if part.strip()]
    except ValueError:
        raise MultiboxError(
            f"--batch-sizes: expected comma-separated integers such as 1,8,32, got {batch_sizes!r}"
        ) from None
    if weights is not None:
        from multibox.engine.checkpoint import load_checkpoint

        if overrides:
            raise MultiboxError(
                f"bench: KEY=VALUE overrides ({overrides[0]}) go with -c CONFIG; a checkpoint runs as saved"
            )
        loaded = load_checkpoint(weights)
        detector, config, source = loaded.detector, loaded.config, str(weights)
    else:
        from multibox.models.detector import build_detector
        from multibox.models.summary import DEFAULT_NUM_CLASSES

        config = load_config(config_path, overrides)
        detector, _ = build_detector(config, config.model.num_classes or DEFAULT_NUM_CLASSES, load_weights=False)
        source = " ".join([str(config_path), *overrides, "(random weights)"])
    input_size = config.data.input_size
    timings = bench_detector(detector.eval(), input_size, sizes, device, warmup, repeat, onnx)
    title = f"{config.model.name} {input_size[0]}×{input_size[1]}, {torch.get_num_threads()} CPU threads — {source}"
    console = Console()
    if not console.is_terminal:  # piped into a file or a test: no 80-column default that cuts the table
        console = Console(width=120)
    console.print(bench_table(timings, title))
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "source": source,
            "model": config.model.name,
            "input_size": list(input_size),
            "machine": machine_info(),
            "warmup": warmup,
            "repeat": repeat,
            "timings": [asdict(t) | {"images_per_s": round(t.images_per_s, 2)} for t in timings],
        }
        json_out.write_text(json.dumps(record, indent=2))
    return timings
