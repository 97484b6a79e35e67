"""Post-training INT8 quantization of exported detectors: ONNX Runtime static QDQ, and NNCF for OpenVINO.

Both calibrate on real images through exactly the evaluation preprocessing (``read_image`` and the
eval resize, as uint8 at the input size: the graph normalises itself), so the activation ranges seen
in calibration are the ones evaluation and deployment feed.

Weights are quantized per output channel (symmetric int8), activations per tensor (asymmetric uint8),
the QDQ format that ONNX Runtime fuses into integer kernels and that TensorRT and OpenVINO read.
Only convolutions are quantized: the box decoding, softmax and NMS stay in float (they are cheap, and
quantized box coordinates would cost accuracy for nothing). ``fp32_layers`` keeps chosen convolutions
in float, the usual fix for SSD's INT8 loss (the first layer sees raw pixels; the head's outputs are
box offsets and logits whose precision decides the boxes): see the ONNX Runtime quantization guide,
https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html, and NNCF's
``IgnoredScope``, https://github.com/openvinotoolkit/nncf.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from multibox.errors import MultiboxError
from multibox.inference.runtime import openvino_core

DEFAULT_CALIB_COUNT = 200
# Activation ranges are merged every (at most) this many calibration images instead of holding every
# image's intermediate tensors (SSD300-VGG16 has ~100 MB of them per image).
_CALIB_CHUNK = 8


@dataclass
class Calibration:
    """uint8 (N, 3, H, W) calibration images and the files that could not be read."""

    images: np.ndarray
    skipped: list[str]
    source: str


def calibration_files(folder: Path | None, train_files: list[Path] | None) -> tuple[list[Path], str]:
    """The candidate files: every image under `folder`, else the config's training images."""
    from multibox.inference.predict import list_images

    if folder is not None:
        if not Path(folder).is_dir():
            raise MultiboxError(f"{folder}: --calib-images must be a folder of images")
        files = list_images(Path(folder))
        if not files:
            raise MultiboxError(f"{folder}: no image files for calibration")
        return files, str(folder)
    if not train_files:
        raise MultiboxError("--calib-images: the config has no training images to calibrate on; give a folder")
    return list(train_files), "the config's training images"


def load_calibration(files: list[Path], count: int, input_size: tuple[int, int], source: str) -> Calibration:
    """`count` readable images spread over `files` (a seeded shuffle), preprocessed as evaluation does;
    unreadable files are counted and skipped, and none readable is an error."""
    from multibox.data.dataset import read_image
    from multibox.data.transforms import build_eval_transform

    if count < 1:
        raise MultiboxError(f"--calib-count: must be at least 1, got {count}")
    transform = build_eval_transform(input_size)
    empty_boxes, empty_labels = np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    images: list[np.ndarray] = []
    skipped: list[str] = []
    for index in np.random.default_rng(0).permutation(len(files)):
        if len(images) == count:
            break
        try:
            image = read_image(files[index])
        except MultiboxError:
            skipped.append(str(files[index]))
            continue
        resized, _, _ = transform(image, empty_boxes, empty_labels)
        images.append(np.ascontiguousarray(resized.transpose(2, 0, 1)))
    if not images:
        raise MultiboxError(f"{source}: none of the {len(skipped)} calibration image(s) could be read")
    return Calibration(np.stack(images), skipped, source)


def resolve_fp32_layers(names: list[str], convs: list[str], what: str = "--fp32-layers") -> list[str]:
    """Conv node names kept in float: ``first`` (the first convolution), ``head`` (every convolution of the
    detection head), ``none``, or any other word as a substring of node names (each must match one)."""
    kept: list[str] = []
    for name in (n.strip() for n in names):
        if name in ("", "none"):
            continue
        if name == "first":
            matches = convs[:1]
        elif name == "head":
            matches = [c for c in convs if "/head/" in c]
        else:
            matches = [c for c in convs if name in c]
        if not matches:
            raise MultiboxError(
                f"{what}: {name!r} matches no convolution (names look like {convs[0] if convs else '-'})"
            )
        kept += [m for m in matches if m not in kept]
    return kept


def parse_fp32_layers(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


class _Reader:
    """onnxruntime.quantization's CalibrationDataReader protocol over a uint8 image array, one image a call."""

    def __init__(self, images: np.ndarray) -> None:
        self.images = images
        self._iter: Iterator[np.ndarray] = iter(images)

    def __len__(self) -> int:
        return len(self.images)

    def get_next(self) -> dict[str, np.ndarray] | None:
        image = next(self._iter, None)
        return None if image is None else {"images": image[None]}

    def rewind(self) -> None:
        self._iter = iter(self.images)

    def set_range(self, start_index: int, end_index: int) -> None:
        """``CalibStridedMinMax``: ranges are merged chunk by chunk instead of holding every image's tensors."""
        self._iter = iter(self.images[start_index:end_index])


def _stride(count: int) -> int:
    """The largest chunk of at most _CALIB_CHUNK images that divides `count` (ONNX Runtime requires it)."""
    return max(d for d in range(1, min(_CALIB_CHUNK, count) + 1) if count % d == 0)


def onnx_conv_names(path: Path) -> list[str]:
    import onnx

    return [node.name for node in onnx.load(str(path)).graph.node if node.op_type == "Conv"]


# Activation-range estimators of onnxruntime.quantization.CalibrationMethod. Percentile (99.999th) is the default:
# min/max ranges are stretched by rare outliers, which costs the common values their resolution; measured on two
# trained models, it cut the INT8 mAP loss from 0.67 to 0.39 and from 1.14 to 0.06 points
# (benchmarks/int8_sensitivity.py, RESULTS.md).
CALIB_METHODS = ("percentile", "minmax", "entropy")
DEFAULT_CALIB_METHOD = "percentile"
# The largest box/score difference of an FP32 export from PyTorch that its parity check allows.
DEFAULT_ATOL = 1e-4


def quantize_onnx(
    fp32_path: Path,
    out: Path,
    calibration: Calibration,
    fp32_layers: list[str],
    method: str = DEFAULT_CALIB_METHOD,
    only: list[str] | None = None,
) -> list[str]:
    """Static QDQ INT8 of an exported FP32 ONNX file into `out`; returns the convolutions kept in float.

    `method` estimates the activation ranges (CALIB_METHODS); `only` quantizes just these convolutions
    (a per-layer sensitivity scan). The metadata of the FP32 file is carried over (the quantizer drops it)
    with precision ``int8``."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if method not in CALIB_METHODS:
        raise MultiboxError(f"calibration method: expected one of {', '.join(CALIB_METHODS)}, got {method!r}")
    excluded = resolve_fp32_layers(fp32_layers, onnx_conv_names(fp32_path))
    calibrate = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }[method]
    # In chunks, whatever the method: ONNX Runtime otherwise holds every image's intermediate tensors (the
    # histogram calibrators too; they merge their histograms chunk by chunk).
    extra = {"CalibStridedMinMax": _stride(len(calibration.images))}
    source = onnx.load(str(fp32_path))
    metadata = {p.key: p.value for p in source.metadata_props}
    with (
        tempfile.TemporaryDirectory(prefix="multibox-quant-") as scratch,
        _quiet_root_logger(),
        contextlib.redirect_stdout(io.StringIO()),  # the histogram calibrators print their progress
    ):
        staged, prepared = Path(scratch) / out.name, Path(scratch) / "prepared.onnx"
        onnx.save(_inline_identities(source), str(prepared))
        quantize_static(
            str(prepared),
            str(staged),
            _Reader(calibration.images),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["Conv"],
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=excluded,
            nodes_to_quantize=only,
            calibrate_method=calibrate,
            extra_options=extra,
        )
        model = onnx.load(str(staged))
        del model.metadata_props[:]
        for key, value in {
            **metadata,
            "precision": "int8",
            "fp32_layers": ",".join(excluded),
            "calib_method": method,
        }.items():
            model.metadata_props.add(key=key, value=value)
        onnx.save(model, str(staged))
        staged.replace(out)
    return excluded


def _inline_identities(model: Any) -> Any:
    """Initializers reached through ``Identity`` (torch.onnx shares equal tensors that way, e.g. zero biases)
    become initializers of their own: the quantizer only folds a convolution's bias when it is one."""
    from onnx import numpy_helper

    inits = {init.name: init for init in model.graph.initializer}
    kept = []
    for node in model.graph.node:
        if node.op_type == "Identity" and node.input[0] in inits:
            copy = numpy_helper.from_array(numpy_helper.to_array(inits[node.input[0]]), node.output[0])
            model.graph.initializer.append(copy)
        else:
            kept.append(node)
    del model.graph.node[:]
    model.graph.node.extend(kept)
    return model


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """onnxruntime.quantization and NNCF log advice through the root logger; the library prints nothing."""
    loggers = [logging.getLogger(), logging.getLogger("nncf")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def openvino_conv_names(model: Any) -> list[str]:
    return [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() == "Convolution"]


def quantize_openvino(
    model: Any, calibration: Calibration, fp32_layers: list[str], preset: str = "mixed"
) -> tuple[Any, list[str]]:
    """NNCF post-training quantization of an OpenVINO model (convolutions only, as for ONNX).

    `preset`: NNCF's ``QuantizationPreset``. mixed (asymmetric activations, as ONNX Runtime's uint8) is the
    default: the activations after ReLU6 and hard-swish are far from centred on zero, and NNCF's performance
    preset (symmetric) lost 1.24 mAP points on the demo model where mixed lost 0.42 (RESULTS.md)."""
    try:
        import nncf
    except ImportError:
        raise MultiboxError(
            "--int8 with --format openvino needs NNCF; pip install 'multibox[deploy]' (or: pip install "
            "nncf), or quantize to ONNX (--format onnx --int8) and run that file in OpenVINO"
        ) from None
    openvino_core()  # before NNCF's own Cores, so theirs nest inside it (see openvino_core)
    convs = openvino_conv_names(model)
    excluded = resolve_fp32_layers(fp32_layers, convs)
    others = sorted({op.get_type_name() for op in model.get_ordered_ops()} - {"Convolution", "GroupConvolution"})
    ignored = nncf.IgnoredScope(names=excluded, types=others, validate=False)
    dataset = nncf.Dataset([image[None] for image in calibration.images])
    with _quiet_root_logger(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        quantized = nncf.quantize(
            model,
            dataset,
            subset_size=len(calibration.images),
            ignored_scope=ignored,
            preset=nncf.QuantizationPreset(preset),
        )
    return quantized, excluded


def describe_skipped(calibration: Calibration) -> str | None:
    """The CLI's note on unreadable calibration images (None when all were read)."""
    if not calibration.skipped:
        return None
    first = re.sub(r"\s+", " ", calibration.skipped[0])
    return f"calibration: skipped {len(calibration.skipped)} unreadable image(s) (first: {first})"
