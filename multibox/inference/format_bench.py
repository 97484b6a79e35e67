"""Accuracy and speed per deployment format: the same checkpoint as PyTorch, ONNX (FP32, INT8) and
OpenVINO (FP32, FP16, INT8), and on a GPU ONNX Runtime's CUDA and TensorRT (FP16, INT8) providers.

Every format is exported into one folder by ``multibox export``'s own code (NMS in the graph, any
batch size), scored on the validation set by the evaluation core, then timed end to end (uint8 images
in, final detections out) on validation images. A format that cannot run here is a row with the reason,
never silently missing.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from multibox.errors import MultiboxError
from multibox.inference.quantize import DEFAULT_ATOL, DEFAULT_CALIB_METHOD

CPU_FORMATS = ("pytorch", "onnx", "onnx-int8", "openvino", "openvino-fp16", "openvino-int8")
GPU_FORMATS = ("onnx-cuda", "onnx-trt-fp16", "onnx-trt-int8")
DEFAULT_FORMATS = "pytorch,onnx,onnx-int8,openvino,openvino-int8"

Detect = Callable[[Tensor, Tensor], list[dict[str, Tensor]]]


@dataclass
class FormatResult:
    """One format at one batch size; `error` says why it did not run (then the numbers are None)."""

    format: str
    batch_size: int
    file_bytes: int | None = None
    map: float | None = None
    map_50: float | None = None
    p50_ms: float | None = None
    p95_ms: float | None = None
    images_per_s: float | None = None
    error: str | None = None


@dataclass
class _Runner:
    detect: Detect
    file_bytes: int


def parse_formats(text: str) -> list[str]:
    formats = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [f for f in formats if f not in CPU_FORMATS + GPU_FORMATS]
    if unknown or not formats:
        raise MultiboxError(
            f"--formats: unknown {unknown[0] if unknown else '(none)'}; choose from "
            f"{', '.join(CPU_FORMATS + GPU_FORMATS)}"
        )
    return formats


def latency_ms(call: Callable[[], Any], warmup: int, repeat: int) -> list[float]:
    """Wall time of each of `repeat` calls after `warmup` untimed ones (ONNX Runtime and OpenVINO return
    host arrays, PyTorch here runs on the CPU: nothing to synchronise)."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000.0)
    return times


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


class FormatBench:
    """Exports on demand into `folder` and builds a runner per format (errors become the row's reason)."""

    def __init__(
        self,
        weights: Path,
        folder: Path,
        device: str,
        calib_images: Path | None,
        calib_count: int,
        fp32_layers: list[str] | None,
        calib_method: str = DEFAULT_CALIB_METHOD,
        atol: float = DEFAULT_ATOL,
    ) -> None:
        from multibox.engine.checkpoint import load_checkpoint

        self.weights, self.folder, self.device = Path(weights), Path(folder), device
        self.calib_images, self.calib_count, self.fp32_layers = calib_images, calib_count, fp32_layers
        self.calib_method, self.atol = calib_method, atol
        self.loaded = load_checkpoint(weights)
        self._files: dict[str, Path] = {}

    def _file(self, fmt: Literal["onnx", "openvino"], precision: str) -> Path:
        """The exported file of (format, precision), exported once."""
        from multibox.inference.export import export_checkpoint

        key = f"{fmt}-{precision}"
        if key not in self._files:
            out = self.folder / f"model_{precision}{'.xml' if fmt == 'openvino' else '.onnx'}"
            export_checkpoint(
                self.weights,
                fmt,
                out,
                nms=True,
                dynamic_batch=True,
                force=True,
                int8=precision == "int8",
                half=precision == "fp16",
                calib_images=self.calib_images,
                calib_count=self.calib_count,
                fp32_layers=self.fp32_layers,
                calib_method=self.calib_method,
                atol=self.atol,
            )
            self._files[key] = out
        return self._files[key]

    def runner(self, name: str) -> _Runner:
        from multibox.inference.runtime import ExportedModel, model_file_size

        if name == "pytorch":
            if self.device != "cpu":
                raise MultiboxError("pytorch: timed on the CPU here; use multibox bench --weights for the GPU")
            detector = self.loaded.detector.cpu().eval()
            return _Runner(
                lambda images, sizes: detector.detect(images.float() / 255.0, sizes), self.weights.stat().st_size
            )
        if name in GPU_FORMATS and self.device == "cpu":
            raise MultiboxError(f"{name}: needs --device cuda")
        if name not in GPU_FORMATS and self.device != "cpu":
            raise MultiboxError(f"{name}: a CPU format; --device cpu runs it")
        fmt: Literal["onnx", "openvino"] = "openvino" if name.startswith("openvino") else "onnx"
        precision = "int8" if name.endswith("int8") else "fp16" if name == "openvino-fp16" else "fp32"
        tensorrt = {"onnx-trt-fp16": "fp16", "onnx-trt-int8": "int8"}.get(name)
        if name in GPU_FORMATS:
            from multibox.inference.runtime import onnx_providers

            onnx_providers("cuda", tensorrt)  # fails fast, before exporting, when this onnxruntime lacks them
        path = self._file(fmt, precision)
        model = ExportedModel(path, self.device if name in GPU_FORMATS else "cpu", tensorrt=tensorrt)
        return _Runner(model.detect, model_file_size(path))


def _val_batches(config: Any, batch_sizes: list[int]) -> dict[int, tuple[Tensor, Tensor]]:
    """uint8 timing batches: validation images (repeated when too few), else seeded random pixels."""
    height, width = config.data.input_size
    images = None
    if config.data.val is not None:
        from multibox.data.datamodule import load_split
        from multibox.inference.quantize import load_calibration

        records = load_split(config.data.val, "val", config.data.format, config.data).records
        loaded = load_calibration([r.file for r in records], max(batch_sizes), (height, width), "the val set")
        images = torch.from_numpy(loaded.images)
    if images is None:
        images = torch.randint(
            0, 256, (max(batch_sizes), 3, height, width), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
        )
    batches = {}
    for n in batch_sizes:
        chosen = images[torch.arange(n) % len(images)]
        batches[n] = (chosen, torch.tensor([[height, width]] * n))
    return batches


def bench_formats(
    weights: Path,
    formats: list[str],
    batch_sizes: list[int],
    folder: Path,
    config: Any,
    device: str = "cpu",
    warmup: int = 2,
    repeat: int = 20,
    calib_images: Path | None = None,
    calib_count: int = 200,
    fp32_layers: list[str] | None = None,
    evaluate: bool = True,
    calib_method: str = DEFAULT_CALIB_METHOD,
    atol: float = DEFAULT_ATOL,
    progress: Callable[[str], None] | None = None,
) -> list[FormatResult]:
    """One result per (format, batch size): file size, COCO mAP on `config`'s val set, p50/p95 latency, images/s."""
    from multibox.data.datamodule import DetectionDataModule
    from multibox.engine.evaluate import detect_and_evaluate

    if not batch_sizes or min(batch_sizes) < 1:
        raise MultiboxError(f"--batch-sizes: need positive sizes, got {batch_sizes}")
    bench = FormatBench(weights, folder, device, calib_images, calib_count, fp32_layers, calib_method, atol)
    config = config.model_copy(
        update={"data": config.data.model_copy(update={"input_size": list(bench.loaded.config.data.input_size)})}
    )
    data = DetectionDataModule(config) if evaluate else None
    batches = _val_batches(config, batch_sizes)
    results = []
    for name in formats:
        if progress:
            progress(name)
        try:
            runner = bench.runner(name)
            scores: dict[str, Any] = {}
            if data is not None and data.val_set is not None:
                scores = detect_and_evaluate(
                    None,
                    data.val_dataloader(),
                    data.val_set.to_coco_gt(),
                    bench.loaded.category_ids,
                    bench.loaded.class_names,
                    torch.device("cpu"),
                    progress=False,
                    prepare_batch=data.prepare_batch,
                    detect=runner.detect,
                ).metrics
            for n, (images, sizes) in batches.items():
                times = latency_ms(partial(runner.detect, images, sizes), warmup, repeat)
                p50 = statistics.median(times)
                results.append(
                    FormatResult(
                        name,
                        n,
                        runner.file_bytes,
                        scores.get("map"),
                        scores.get("map_50"),
                        p50,
                        _percentile(times, 95),
                        1000.0 * n / p50,
                    )
                )
        except MultiboxError as error:
            results += [FormatResult(name, n, error=str(error)) for n in batch_sizes]
    return results
