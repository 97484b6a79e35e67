"""Running an exported model (ONNX or OpenVINO IR) the way a deployment does, from its own metadata.

``multibox export`` writes what a reader needs into the file: class names, dataset category ids, input
size, the postprocess settings, whether NMS is in the graph, the precision and the training config
(ONNX ``metadata_props``; OpenVINO ``rt_info`` under ``multibox``). :class:`ExportedModel` reads it back,
so ``multibox eval`` and ``multibox bench`` score the artefact that ships, not the checkpoint it came
from. A file without that metadata is refused: its class order and input size would be guesses.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from multibox.boxes.postprocess import PostprocessSettings, select_detections
from multibox.errors import MultiboxError

METADATA_VERSION = "1"
RUNTIME_SUFFIXES = {".onnx": "onnxruntime", ".xml": "openvino"}
OPENVINO_MISSING = "OpenVINO is not installed; pip install 'multibox[deploy]' (or: pip install openvino nncf)"


@dataclass(frozen=True)
class ExportMetadata:
    """What ``multibox export`` records about the model inside the exported file."""

    class_names: list[str]
    category_ids: list[int]
    input_size: tuple[int, int]
    nms: bool
    settings: PostprocessSettings
    precision: str = "fp32"
    config: dict[str, Any] | None = None

    def to_strings(self) -> dict[str, str]:
        s = self.settings
        return {
            "multibox": METADATA_VERSION,
            "class_names": json.dumps(self.class_names),
            "category_ids": json.dumps(self.category_ids),
            "input_size": json.dumps(list(self.input_size)),
            "input": f"images uint8 RGB (N, 3, {self.input_size[0]}, {self.input_size[1]})",
            "boxes": "xyxy normalised to [0, 1]",
            "score_activation": s.score_activation,
            "postprocess": json.dumps(
                {
                    "nms": self.nms,
                    "score_threshold": s.score_threshold,
                    "nms_threshold": s.nms_threshold,
                    "topk_candidates": s.topk_candidates,
                    "max_detections": s.max_detections,
                }
            ),
            "precision": self.precision,
            "config": json.dumps(self.config) if self.config is not None else "null",
        }

    @classmethod
    def from_strings(cls, values: dict[str, str], path: Path) -> ExportMetadata:
        """Parse the stored strings; a file written by another tool has none of them."""
        if "multibox" not in values or "input_size" not in values:
            raise MultiboxError(
                f"{path}: no multibox metadata (class names, input size); export it with multibox export"
            )
        try:
            post = json.loads(values["postprocess"])
            settings = PostprocessSettings(
                post["score_threshold"],
                post["nms_threshold"],
                post["topk_candidates"],
                post["max_detections"],
                "sigmoid" if values.get("score_activation") == "sigmoid" else "softmax",
            )
            height, width = json.loads(values["input_size"])
            return cls(
                list(json.loads(values["class_names"])),
                [int(i) for i in json.loads(values["category_ids"])],
                (int(height), int(width)),
                bool(post["nms"]),
                settings,
                values.get("precision", "fp32"),
                json.loads(values.get("config", "null")),
            )
        except (KeyError, ValueError, TypeError) as error:
            raise MultiboxError(f"{path}: damaged multibox metadata ({type(error).__name__}: {error})") from None


def runtime_of(path: Path) -> str:
    """'onnxruntime' for .onnx, 'openvino' for .xml (its weights in the .bin beside it)."""
    runtime = RUNTIME_SUFFIXES.get(Path(path).suffix.lower())
    if runtime is None:
        raise MultiboxError(f"{path}: not an exported model (expected .onnx or OpenVINO .xml)")
    return runtime


def import_openvino() -> Any:
    """The ``openvino`` module, or the one-line install hint (it lives in the optional ``deploy`` extra)."""
    try:
        import openvino
    except ImportError:
        raise MultiboxError(OPENVINO_MISSING) from None
    return openvino


@functools.cache
def openvino_core() -> Any:
    """The one ``ov.Core`` of this process, kept for its lifetime.

    Each Core's CPU plugin installs its own alternate signal stack on the calling thread when it compiles and, when
    the Core is freed, puts back the stack that was there before. Two Cores freed in the order they were made
    (model A loaded, model B loaded, A dropped, B dropped) leave A's freed stack installed, and the next signal the
    process gets — a loader worker exiting (SIGCHLD), Ctrl-C — is delivered onto unmapped memory: a segfault
    with no traceback (measured with OpenVINO 2026.4; tests/inference/test_deploy.py). One Core made before any
    other (NNCF makes its own while quantizing) keeps every later one nested inside it."""
    return import_openvino().Core()


def onnx_providers(device: str, tensorrt: str | None = None) -> list[Any]:
    """Execution providers for `device`: the CPU; CUDA; or TensorRT (``fp16``/``int8``) falling back to CUDA.

    Raises when this onnxruntime build lacks the provider, so no run silently falls back to the CPU."""
    import onnxruntime as ort

    if device == "cpu":
        return ["CPUExecutionProvider"]
    available = ort.get_available_providers()
    wanted = "TensorrtExecutionProvider" if tensorrt else "CUDAExecutionProvider"
    if wanted not in available:
        raise MultiboxError(
            f"--device {device}: this onnxruntime has no {wanted} (has {', '.join(available)}); install onnxruntime-gpu"
        )
    if tensorrt:
        options = {"trt_fp16_enable": True} if tensorrt == "fp16" else {"trt_int8_enable": True}
        return [("TensorrtExecutionProvider", options), "CUDAExecutionProvider"]
    return ["CUDAExecutionProvider"]


class ExportedModel:
    """An exported detector loaded into its runtime: ``run`` gives the raw graph outputs, ``detect`` the
    same detections as ``SSDDetector.detect`` (boxes in original-image pixels)."""

    def __init__(self, path: Path, device: str = "cpu", threads: int | None = None, tensorrt: str | None = None):
        self.path = Path(path)
        self.runtime = runtime_of(self.path)
        if not self.path.is_file():
            raise MultiboxError(f"{self.path}: no such file")
        threads = threads or torch.get_num_threads()
        if self.runtime == "onnxruntime":
            self._load_onnx(device, threads, tensorrt)
        else:
            self._load_openvino(device, threads)

    def _load_onnx(self, device: str, threads: int, tensorrt: str | None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            session = ort.InferenceSession(str(self.path), options, providers=onnx_providers(device, tensorrt))
        except MultiboxError:
            raise
        except Exception as error:  # onnxruntime raises its own exception types for unreadable files
            raise MultiboxError(f"{self.path}: cannot load ONNX model ({str(error).splitlines()[0][:160]})") from None
        self.metadata = ExportMetadata.from_strings(session.get_modelmeta().custom_metadata_map, self.path)
        self._session = session
        batch = session.get_inputs()[0].shape[0]
        self.fixed_batch = batch if isinstance(batch, int) else None
        self.run = self._chunked(lambda images: session.run(None, {"images": images}))

    def _chunked(self, run: Any) -> Any:
        """A graph exported at a fixed batch size takes any batch: chunks of that size, the last one padded."""

        def call(images: np.ndarray) -> list[np.ndarray]:
            size = self.fixed_batch
            if size is None or len(images) == size:
                return run(images)
            parts = []
            for start in range(0, len(images), size):
                chunk = images[start : start + size]
                padding = np.zeros((size - len(chunk), *chunk.shape[1:]), chunk.dtype)
                parts.append([o[: len(chunk)] for o in run(np.concatenate([chunk, padding]))])
            return [np.concatenate(outputs) for outputs in zip(*parts, strict=True)]

        return call

    def _load_openvino(self, device: str, threads: int) -> None:
        core = openvino_core()
        try:
            model = core.read_model(str(self.path))
        except Exception as error:  # openvino raises RuntimeError subclasses with multi-line text
            raise MultiboxError(
                f"{self.path}: cannot read OpenVINO model ({str(error).splitlines()[0][:160]})"
            ) from None
        self.metadata = ExportMetadata.from_strings(read_rt_info(model), self.path)
        target = {"cpu": "CPU", "cuda": "GPU"}.get(device.split(":")[0], device.upper())
        config = {"INFERENCE_NUM_THREADS": threads} if target == "CPU" else {}
        batch = model.inputs[0].get_partial_shape()[0]
        self.fixed_batch = batch.get_length() if batch.is_static else None
        requests: dict[int, tuple[Any, Any]] = {}

        def infer(images: np.ndarray) -> list[np.ndarray]:
            # A dynamic batch dimension costs OpenVINO's CPU plugin ~40 % per call (2.3 vs 3.8 ms for the demo
            # model, RESULTS.md): compile once per batch size met, at that static size.
            if len(images) not in requests:
                sized = model
                if self.fixed_batch is None:
                    sized = model.clone()
                    sized.reshape({0: [len(images), *images.shape[1:]]})
                compiled = core.compile_model(sized, target, config)
                requests[len(images)] = compiled.create_infer_request(), compiled.outputs
            request, outputs = requests[len(images)]
            result = request.infer({0: images})
            return [result[o] for o in outputs]

        self.run = self._chunked(infer)

    @torch.no_grad()
    def detect(self, images: Tensor, original_sizes: Tensor) -> list[dict[str, Tensor]]:
        """uint8 (N, 3, H, W) at the input size → per-image boxes (xyxy pixels), scores, labels (1..K)."""
        outputs = [torch.from_numpy(np.asarray(o)) for o in self.run(np.ascontiguousarray(images.cpu().numpy()))]
        scale = original_sizes.cpu().flip(-1).repeat(1, 2).float()[:, None, :]  # (N, 1, 4) w h w h
        if self.metadata.nms:
            boxes, scores, labels, counts = outputs
            boxes = boxes.float() * scale
            return [
                {"boxes": boxes[i, :n], "scores": scores[i, :n].float(), "labels": labels[i, :n].long()}
                for i, n in enumerate(counts.tolist())
            ]
        boxes, scores = outputs
        background = torch.zeros(*scores.shape[:2], 1, dtype=torch.float32)
        return select_detections(
            boxes.float() * scale, torch.cat([background, scores.float()], dim=2), self.metadata.settings
        )


def read_rt_info(model: Any) -> dict[str, str]:
    """The ``multibox`` section of an OpenVINO model's rt_info as plain strings ({} when absent)."""
    info = model.get_rt_info()
    if "multibox" not in info:
        return {}
    section = info["multibox"]
    section = section.value if hasattr(section, "value") else section
    return {str(key): str(value.value if hasattr(value, "value") else value) for key, value in dict(section).items()}


def write_rt_info(model: Any, values: dict[str, str]) -> None:
    for key, value in values.items():
        model.set_rt_info(value, ["multibox", key])


def model_file_size(path: Path) -> int:
    """Bytes on disk of an exported model: the .xml and its .bin for OpenVINO."""
    path = Path(path)
    files = [path, path.with_suffix(".bin")] if path.suffix == ".xml" else [path]
    return sum(f.stat().st_size for f in files if f.exists())
