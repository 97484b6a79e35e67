"""Exporting a detector to ONNX or TorchScript, checked against PyTorch before it is kept.

The exported graph is the whole detector, decoding included, so a deployment needs no multibox:

- input ``images``: (N, 3, H, W) **uint8** RGB at the model's input size (``data.input_size``);
  the graph casts to float, divides by 255 and normalises itself, so no caller can get that wrong.
- without NMS: ``boxes`` (N, A, 4) xyxy normalised to [0, 1] (clamped; multiply by the original
  width/height) and ``scores`` (N, A, K) for the K foreground classes (label = column + 1): softmax
  over background + classes, or one sigmoid per class for focal-trained models.
- with NMS: fixed-size ``boxes`` (N, D, 4), ``scores`` (N, D), ``labels`` (N, D) int64 (1..K) and
  ``num_detections`` (N,) int64, D = ``eval.max_detections``; rows past ``num_detections`` are zero.
  The semantics are ``SSDDetector.postprocess``'s: per class the ``topk_candidates`` best boxes, a
  ``score_threshold``, per-class NMS at ``nms_threshold`` (ONNX ``NonMaxSuppression``), then the
  ``max_detections`` best per image, best first. Equal scores may come out in another order.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.ops import batched_nms

from multibox.boxes.coding import BoxCoder
from multibox.errors import MultiboxError
from multibox.inference.quantize import DEFAULT_ATOL, DEFAULT_CALIB_METHOD
from multibox.models.detector import SSDDetector
from multibox.outputs import writable_dir

if TYPE_CHECKING:
    from multibox.engine.checkpoint import LoadedCheckpoint

ExportFormat = Literal["onnx", "torchscript", "openvino"]
OPSET = 17
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript", "openvino": ".xml"}
INT8_FORMATS = ("onnx", "openvino")


def nms_indices(boxes: Tensor, scores: Tensor, iou_threshold: float, score_threshold: float) -> Tensor:
    """Per-(image, class) NMS with ONNX ``NonMaxSuppression``'s interface and result.

    boxes (N, A, 4) xyxy, scores (N, C, A) → selected (M, 3) int64 rows (image, class, box).
    """
    image, cls, box = torch.nonzero(scores > score_threshold).unbind(1)  # (not as_tuple: TorchScript lacks it)
    keep = batched_nms(boxes[image, box], scores[image, cls, box], image * scores.shape[1] + cls, iou_threshold)
    return torch.stack((image[keep], cls[keep], box[keep]), dim=1)


class _OnnxNonMaxSuppression(torch.autograd.Function):
    """``nms_indices`` in PyTorch, the ONNX ``NonMaxSuppression`` op in an exported graph."""

    @staticmethod
    def forward(
        ctx, boxes: Tensor, scores: Tensor, max_per_class: int, iou_threshold: float, score_threshold: float
    ) -> Tensor:
        return nms_indices(boxes, scores, iou_threshold, score_threshold)

    @staticmethod
    def symbolic(g, boxes, scores, max_per_class: int, iou_threshold: float, score_threshold: float):
        def constant(value: float, dtype: torch.dtype):
            return g.op("Constant", value_t=torch.tensor([value], dtype=dtype))

        return g.op(
            "NonMaxSuppression",
            boxes,
            scores,
            constant(max_per_class, torch.int64),
            constant(iou_threshold, torch.float32),
            constant(score_threshold, torch.float32),
        )


class DecodeScores(nn.Module):
    """Raw head outputs → boxes (N, A, 4) xyxy in [0, 1] and foreground scores (N, A, K)."""

    default_boxes: Tensor  # a buffer: follows the module's device

    def __init__(self, detector: SSDDetector) -> None:
        super().__init__()
        self.register_buffer("default_boxes", detector.default_boxes.detach().clone(), persistent=False)
        self.sigmoid = detector.settings.score_activation == "sigmoid"

    def forward(self, box_regression: Tensor, cls_logits: Tensor) -> tuple[Tensor, Tensor]:
        boxes = BoxCoder().decode(box_regression, self.default_boxes).clamp(0.0, 1.0)
        if self.sigmoid:
            return boxes, torch.sigmoid(cls_logits[..., 1:])
        return boxes, torch.softmax(cls_logits, dim=-1)[..., 1:]


class SelectDetections(nn.Module):
    """Decoded boxes and scores → fixed-size detections, with the detector's postprocess settings."""

    def __init__(self, detector: SSDDetector) -> None:
        super().__init__()
        self.settings = detector.settings
        # Static sizes: traced shapes of a graph input would reach the NMS symbolic as graph values.
        num_classes = detector.model.head.num_classes
        assert isinstance(num_classes, int)  # every head keeps its class count (background included) as an int
        self.num_boxes, self.num_classes = detector.default_boxes.shape[0], num_classes - 1
        self.nms: Callable[[Tensor, Tensor, float, float], Tensor] = nms_indices

    def forward(self, boxes: Tensor, scores: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        s, num_boxes, num_classes = self.settings, self.num_boxes, self.num_classes
        by_class = scores.transpose(1, 2)  # (N, K, A)
        k = min(s.topk_candidates, num_boxes)
        top_scores, top_index = by_class.topk(k, dim=2)
        candidates = torch.full_like(by_class, -1.0).scatter(2, top_index, top_scores)  # only the top k per class
        if torch.onnx.is_in_onnx_export():
            selected = _OnnxNonMaxSuppression.apply(boxes, candidates, k, s.nms_threshold, s.score_threshold)
        else:
            selected = self.nms(boxes, candidates, s.nms_threshold, s.score_threshold)
        kept = torch.zeros_like(candidates, dtype=torch.bool)
        kept[selected[:, 0], selected[:, 1], selected[:, 2]] = True
        flat = torch.where(kept, candidates, torch.full_like(candidates, -1.0)).flatten(1)  # (N, K * A)
        best, index = flat.topk(min(s.max_detections, num_classes * num_boxes), dim=1)
        valid = best >= 0
        box_index = index % num_boxes
        out_boxes = torch.gather(boxes, 1, box_index[..., None].expand(-1, -1, 4)) * valid[..., None]
        labels = torch.where(valid, torch.div(index, num_boxes, rounding_mode="floor") + 1, torch.zeros_like(index))
        return out_boxes, best * valid, labels, valid.sum(dim=1)


class ExportableDetector(nn.Module):
    """uint8 images → decoded boxes and scores, or (with ``nms``) fixed-size detections."""

    def __init__(self, detector: SSDDetector, nms: bool) -> None:
        super().__init__()
        self.model = detector.model
        self.decode = DecodeScores(detector)
        self.select = SelectDetections(detector) if nms else None
        self.eval()

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        box_regression, cls_logits = self.model(images.float() / 255.0)
        boxes, scores = self.decode(box_regression, cls_logits)
        return (boxes, scores) if self.select is None else self.select(boxes, scores)


def output_names(nms: bool) -> list[str]:
    return ["boxes", "scores", "labels", "num_detections"] if nms else ["boxes", "scores"]


def export_onnx(
    module: nn.Module,
    example: tuple[Tensor, ...],
    path: Path,
    input_names: list[str],
    names: list[str],
    dynamic_batch: bool,
    metadata: dict[str, str] | None = None,
) -> None:
    """torch.onnx's TorchScript-based exporter (``dynamo=False``): it needs no onnxscript and
    exports the custom NMS symbolic; then ``onnx.checker`` validates the file."""
    import onnx

    axes = {name: {0: "batch"} for name in input_names + names} if dynamic_batch else None
    module.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the legacy-exporter deprecation and tracer warnings
        torch.onnx.export(
            module,
            example,
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=input_names,
            output_names=names,
            dynamic_axes=axes,
        )
    model = onnx.load(str(path))
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as error:
        raise MultiboxError(f"{path}: exported graph fails onnx.checker ({str(error).splitlines()[0][:120]})") from None
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))


def export_torchscript(wrapper: ExportableDetector, example: Tensor, path: Path) -> torch.jit.ScriptModule:
    """Traced wrapper; NMS is a scripted function inside it so its data-dependent branches
    (e.g. no box above the threshold) survive tracing. Loading it needs ``import torchvision``."""
    if wrapper.select is not None:
        wrapper.select.nms = torch.jit.script(nms_indices)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # torch.jit is deprecated upstream but still works in torch 2.14
        traced = torch.jit.trace(wrapper, (example,), check_trace=False)
        traced.save(str(path))
    return traced


@dataclass
class Parity:
    """Largest PyTorch ↔ exported differences over the sample images."""

    box_diff: float
    score_diff: float
    detections: int  # compared detections (NMS) or boxes (no NMS)
    mismatched: int = 0  # NMS only: detections found on one side and not the other

    def describe(self) -> str:
        extra = f", {self.mismatched} unmatched" if self.mismatched else ""
        diffs = f"max |Δbox| {self.box_diff:.2e}, max |Δscore| {self.score_diff:.2e}"
        return f"{diffs} over {self.detections} detections{extra}"


def _set_distance(ours: tuple[np.ndarray, ...], theirs: tuple[np.ndarray, ...]) -> tuple[float, float, int]:
    """For each detection of `theirs`, the nearest same-label one of `ours`: the largest box and score
    differences, and how many found no same-label partner."""
    (b1, s1, l1), (b2, s2, l2) = ours, theirs
    same = l2[:, None] == l1[None, :]
    score = np.abs(s2[:, None] - s1[None, :])
    box = np.abs(b2[:, None, :] - b1[None, :, :]).max(-1, initial=0.0)
    cost = np.where(same, np.maximum(score, box), np.inf)
    if cost.size == 0:
        return 0.0, 0.0, len(s2)
    nearest = cost.argmin(1)
    rows = np.arange(len(s2))
    found = same[rows, nearest]
    return (
        float(box[rows, nearest][found].max(initial=0.0)),
        float(score[rows, nearest][found].max(initial=0.0)),
        int((~found).sum()),
    )


def compare_detections(
    outputs: list[np.ndarray], reference: list[dict[str, Tensor]], detector: SSDDetector, atol: float
) -> Parity:
    """Exported fixed-size detections against ``SSDDetector.postprocess``, image by image, as sets.

    Detections within `atol` of the score threshold, or of the last kept score when an image has
    ``max_detections``, may fall on either side of the cut in one runtime: both sides drop them."""
    boxes, scores, labels, counts = outputs
    worst = Parity(0.0, 0.0, 0)
    for i, ref in enumerate(reference):
        n = int(counts[i])
        ours: tuple[np.ndarray, ...] = (boxes[i, :n], scores[i, :n], labels[i, :n])
        theirs: tuple[np.ndarray, ...] = (ref["boxes"].numpy(), ref["scores"].numpy(), ref["labels"].numpy())
        floor = detector.settings.score_threshold
        for side in (ours, theirs):
            if len(side[1]) >= detector.settings.max_detections:
                floor = max(floor, float(side[1].min()))
        ours, theirs = (tuple(a[side[1] > floor + atol] for a in side) for side in (ours, theirs))
        forward, backward = _set_distance(ours, theirs), _set_distance(theirs, ours)
        worst = Parity(
            max(worst.box_diff, forward[0], backward[0]),
            max(worst.score_diff, forward[1], backward[1]),
            worst.detections + len(theirs[1]),
            worst.mismatched + max(forward[2], backward[2], abs(len(ours[1]) - len(theirs[1]))),
        )
    return worst


@torch.no_grad()
def check_parity(
    run: Callable[[np.ndarray], list[np.ndarray]], detector: SSDDetector, images: Tensor, nms: bool, atol: float
) -> Parity:
    """Run the exported model on uint8 `images` and compare with the PyTorch detector."""
    outputs = [np.asarray(o) for o in run(images.numpy())]
    box_regression, cls_logits = detector(images.float() / 255.0)
    if nms:
        ones = torch.ones(len(images), 2)  # image size 1 × 1: boxes stay normalised
        return compare_detections(outputs, detector.postprocess(box_regression, cls_logits, ones), detector, atol)
    boxes, scores = DecodeScores(detector)(box_regression, cls_logits)
    return Parity(
        float(np.abs(outputs[0] - boxes.numpy()).max()),
        float(np.abs(outputs[1] - scores.numpy()).max()),
        boxes.shape[1] * len(images),
    )


def sample_images(input_size: tuple[int, int], count: int, folder: Path | None = None, seed: int = 0) -> Tensor:
    """(count, 3, H, W) uint8: images from `folder` resized to the input size (repeated when too few),
    else seeded random pixels."""
    height, width = input_size
    if folder is None:
        return torch.randint(
            0, 256, (count, 3, height, width), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed)
        )
    import cv2

    from multibox.inference.predict import list_images, read_rgb

    decoded = [image for image in map(read_rgb, list_images(folder)[:count]) if image is not None]
    if not decoded:
        raise MultiboxError(f"{folder}: no readable sample image")
    resized = [cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR) for image in decoded]
    return (
        torch.from_numpy(np.stack([resized[i % len(resized)] for i in range(count)])).permute(0, 3, 1, 2).contiguous()
    )


def default_export_path(weights: Path, fmt: ExportFormat, nms: bool, precision: str = "fp32") -> Path:
    """CKPT[_nms][_int8|_fp16].onnx|.torchscript|.xml next to the checkpoint (best.ckpt → best_int8.onnx)."""
    tag = "" if precision == "fp32" else f"_{precision}"
    return weights.with_name(weights.stem + ("_nms" if nms else "") + tag + SUFFIXES[fmt])


@dataclass
class ExportResult:
    path: Path
    checks: dict[int, Parity]  # batch size → parity (FP32 exports)
    precision: str = "fp32"
    agreement: Agreement | None = None  # INT8/FP16: detections against the FP32 export
    fp32_layers: list[str] = field(default_factory=list)  # INT8: convolutions kept in float
    notes: list[str] = field(default_factory=list)  # e.g. skipped calibration images


def export_metadata(loaded: LoadedCheckpoint, nms: bool, precision: str = "fp32") -> dict[str, str]:
    """What a deployment (and ``multibox eval``) needs to read the outputs, stored in the exported file."""
    from multibox.inference.runtime import ExportMetadata

    return ExportMetadata(
        list(loaded.class_names),
        list(loaded.category_ids),
        loaded.config.data.input_size,
        nms,
        loaded.detector.settings,
        precision,
        loaded.config.to_dict(),
    ).to_strings()


@dataclass
class Agreement:
    """How many of the FP32 model's confident detections the reduced-precision model also finds."""

    matched: int
    total: int
    score: float
    iou: float

    @property
    def fraction(self) -> float:
        return self.matched / self.total if self.total else 1.0

    def describe(self) -> str:
        return (
            f"{self.matched}/{self.total} FP32 detections (score >= {self.score:g}) found again "
            f"(same class, IoU >= {self.iou:g}): {100 * self.fraction:.1f}%"
        )


def detection_agreement(
    reference: list[dict[str, Tensor]], other: list[dict[str, Tensor]], score: float = 0.3, iou: float = 0.5
) -> Agreement:
    """Per image, each reference detection above `score` matched to a same-label detection of `other`
    (any score above the reference's threshold less 0.1) with IoU >= `iou`."""
    from torchvision.ops import box_iou

    matched = total = 0
    for ref, out in zip(reference, other, strict=True):
        keep = ref["scores"] >= score
        cand = out["scores"] >= max(score - 0.1, 0.0)
        boxes, labels = ref["boxes"][keep], ref["labels"][keep]
        total += len(boxes)
        if not len(boxes) or not bool(cand.any()):
            continue
        overlaps = box_iou(boxes, out["boxes"][cand]) * (labels[:, None] == out["labels"][cand][None, :])
        matched += int((overlaps.max(dim=1).values >= iou).sum())
    return Agreement(matched, total, score, iou)


def _stage_onnx(
    loaded: LoadedCheckpoint,
    wrapper: ExportableDetector,
    samples: Tensor,
    path: Path,
    nms: bool,
    dynamic_batch: bool,
    batch_size: int,
) -> None:
    export_onnx(
        wrapper,
        (samples[:batch_size],),
        path,
        ["images"],
        output_names(nms),
        dynamic_batch,
        export_metadata(loaded, nms),
    )


def _fp32_checks(
    path: Path, detector: SSDDetector, samples: Tensor, sizes: list[int], nms: bool, atol: float, fmt: str
) -> dict[int, Parity]:
    """The exported FP32 graph against PyTorch at each batch size; raises when it differs."""
    from multibox.inference.runtime import ExportedModel

    model = ExportedModel(path)
    checks = {n: check_parity(model.run, detector, samples[:n], nms, atol) for n in sizes}
    for n, parity in checks.items():
        if max(parity.box_diff, parity.score_diff) > atol or parity.mismatched:
            raise MultiboxError(
                f"{path.name}: {fmt} output differs from PyTorch at batch {n} ({parity.describe()}; "
                f"tolerance {atol:g}); nothing written"
            )
    return checks


def _agreement(fp32: Path, reduced: Path, images: Tensor) -> Agreement:
    from multibox.inference.runtime import ExportedModel

    sizes = torch.tensor([list(images.shape[-2:])] * len(images))
    reference, other = ExportedModel(fp32), ExportedModel(reduced)
    return detection_agreement(reference.detect(images, sizes), other.detect(images, sizes))


def _check_request(fmt: str, batch_size: int, int8: bool, half: bool) -> None:
    if fmt not in SUFFIXES:
        raise MultiboxError(f"--format: expected one of {', '.join(SUFFIXES)}, got {fmt!r}")
    if batch_size < 1:
        raise MultiboxError(f"--batch-size: must be at least 1, got {batch_size}")
    if int8 and fmt not in INT8_FORMATS:
        raise MultiboxError(f"--int8: not supported for --format {fmt} (use {' or '.join(INT8_FORMATS)})")
    if half and fmt != "openvino":
        raise MultiboxError(f"--fp16: only for --format openvino, not {fmt}")
    if half and int8:
        raise MultiboxError("--fp16 and --int8: choose one precision")


def _targets(path: Path) -> list[Path]:
    """The files an export writes: an OpenVINO .xml has its weights in the .bin beside it."""
    return [path.with_suffix(".bin"), path] if path.suffix == ".xml" else [path]


def export_checkpoint(
    weights: Path,
    fmt: ExportFormat = "onnx",
    out: Path | None = None,
    nms: bool = False,
    dynamic_batch: bool = False,
    force: bool = False,
    images: Path | None = None,
    batch_size: int = 1,
    atol: float = DEFAULT_ATOL,
    int8: bool = False,
    calib_images: Path | None = None,
    calib_count: int = 200,
    fp32_layers: list[str] | None = None,
    half: bool = False,
    calib_method: str = DEFAULT_CALIB_METHOD,
) -> ExportResult:
    """Export a checkpoint and check it before it is kept: an FP32 graph against PyTorch on sample images
    (a second batch size too with `dynamic_batch`), an INT8/FP16 one by how many of the FP32 export's
    detections it finds again. Everything is written into a scratch folder beside the target and moved in
    place only when complete, so a failure leaves nothing half-written and overwrites nothing."""
    from multibox.engine.checkpoint import load_checkpoint

    _check_request(fmt, batch_size, int8, half)
    ov = None
    if fmt == "openvino":
        from multibox.inference.runtime import import_openvino

        ov = import_openvino()
    precision = "int8" if int8 else "fp16" if half else "fp32"
    loaded = load_checkpoint(weights)
    path = out if out is not None else default_export_path(weights, fmt, nms, precision)
    if fmt == "openvino" and path.suffix != ".xml":
        raise MultiboxError(f"{path}: an OpenVINO model is written as NAME.xml (with NAME.bin)")
    if any(p.exists() for p in _targets(path)) and not force:
        raise MultiboxError(f"{path}: already exists; pass --force to overwrite it")
    writable_dir(path.parent, "exported model")
    input_size = loaded.config.data.input_size
    calibration = None
    if int8:
        from multibox.inference.quantize import calibration_files, load_calibration

        files, source = calibration_files(calib_images, _train_files(loaded) if calib_images is None else None)
        calibration = load_calibration(files, calib_count, input_size, source)
    detector = loaded.detector.cpu().eval()
    wrapper = ExportableDetector(detector, nms)
    dynamic_batch = dynamic_batch or int8 or fmt == "openvino"  # calibration and OpenVINO take any batch
    sizes = [batch_size, batch_size + 1] if dynamic_batch else [batch_size]
    samples = sample_images(input_size, max(sizes), images)
    with tempfile.TemporaryDirectory(prefix=".multibox-export-", dir=path.parent) as scratch:
        staged = Path(scratch) / path.name
        result = ExportResult(path, {}, precision)
        if fmt == "torchscript":
            traced = export_torchscript(wrapper, samples[:batch_size], staged)

            def run(batch: np.ndarray) -> list[np.ndarray]:
                return [t.numpy() for t in traced(torch.from_numpy(batch))]

            result.checks = {n: check_parity(run, detector, samples[:n], nms, atol) for n in sizes}
            for n, parity in result.checks.items():
                if max(parity.box_diff, parity.score_diff) > atol or parity.mismatched:
                    raise MultiboxError(
                        f"{path}: torchscript output differs from PyTorch at batch {n} "
                        f"({parity.describe()}; tolerance {atol:g}); nothing written"
                    )
        else:
            fp32 = Path(scratch) / "fp32.onnx"
            _stage_onnx(loaded, wrapper, samples, fp32, nms, dynamic_batch, batch_size)
            result.checks = _fp32_checks(fp32, detector, samples, sizes, nms, atol, "onnx")
            check_images = samples if calibration is None else torch.from_numpy(calibration.images[:16])
            if calibration is not None and calibration.skipped:
                from multibox.inference.quantize import describe_skipped

                result.notes.append(describe_skipped(calibration) or "")
            if fmt == "onnx" and int8:
                from multibox.inference.quantize import quantize_onnx

                assert calibration is not None  # int8 loads it above
                result.fp32_layers = quantize_onnx(fp32, staged, calibration, fp32_layers or [], calib_method)
                result.agreement = _agreement(fp32, staged, check_images)
            elif fmt == "onnx":
                fp32.replace(staged)
            else:
                result.fp32_layers = _stage_openvino(ov, fp32, staged, loaded, nms, precision, calibration, fp32_layers)
                if precision == "fp32":
                    result.checks = _fp32_checks(staged, detector, samples, sizes, nms, atol, "openvino")
                else:
                    result.agreement = _agreement(fp32, staged, check_images)
        for target in _targets(path):
            shutil.move(str(Path(scratch) / target.name), str(target))
    return result


def _train_files(loaded: LoadedCheckpoint) -> list[Path]:
    """The training images of the checkpoint's config (the default calibration set)."""
    from multibox.data.datamodule import load_split

    data = loaded.config.data
    if data.train is None:
        return []
    try:
        return [record.file for record in load_split(data.train, "train", data.format, data).records]
    except MultiboxError as error:
        raise MultiboxError(
            f"--calib-images: the config's training images cannot be listed ({error}); give a folder"
        ) from None


def _stage_openvino(
    ov: Any,
    fp32: Path,
    staged: Path,
    loaded: LoadedCheckpoint,
    nms: bool,
    precision: str,
    calibration: Any,
    fp32_layers: list[str] | None,
) -> list[str]:
    """The FP32 ONNX graph converted with ``ov.convert_model``; INT8 by NNCF, FP16 by compressing the weights."""
    model = ov.convert_model(str(fp32))
    kept: list[str] = []
    if precision == "int8":
        from multibox.inference.quantize import quantize_openvino

        model, kept = quantize_openvino(model, calibration, fp32_layers or [])
    from multibox.inference.runtime import write_rt_info

    write_rt_info(model, {**export_metadata(loaded, nms, precision), "fp32_layers": ",".join(kept)})
    ov.save_model(model, str(staged), compress_to_fp16=precision == "fp16")
    return kept
