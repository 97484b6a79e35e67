"""Inference on the GPU: `multibox predict` in fp32 and with --half against the CPU's detections, and exported
ONNX models on ONNX Runtime's CUDA provider against its CPU provider."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torchvision.ops import box_iou

from multibox.cli import main
from multibox.inference.export import export_checkpoint, sample_images

CONF = 0.2


def _predict(weights, source, out, device: str, *extra: str) -> list[dict]:
    args = [
        "predict",
        "--weights",
        str(weights),
        "--source",
        str(source),
        "--out",
        str(out),
        "--device",
        device,
        "--conf",
        str(CONF),
        *extra,
    ]
    assert main(args) == 0
    return json.loads((out / "predictions.json").read_text())


def _unmatched(reference: list[dict], other: list[dict], score_tol: float, margin: float) -> list[dict]:
    """Detections of `reference` scoring clear of the threshold that `other` lacks: the same image and class,
    box IoU >= 0.9 and score within `score_tol`. Near the threshold (within `margin`) a box may cross it."""
    missing = []
    for ref in reference:
        if ref["score"] < CONF + margin:
            continue
        candidates = [
            o
            for o in other
            if o["image_id"] == ref["image_id"]
            and o["category_id"] == ref["category_id"]
            and abs(o["score"] - ref["score"]) <= score_tol
        ]
        xywh = torch.tensor([ref["bbox"], *[c["bbox"] for c in candidates]])
        xyxy = torch.cat((xywh[:, :2], xywh[:, :2] + xywh[:, 2:]), 1)
        if not candidates or float(box_iou(xyxy[:1], xyxy[1:]).max()) < 0.9:
            missing.append(ref)
    return missing


def test_predict_on_the_gpu_in_fp32_and_half_matches_the_cpu(
    tiny_checkpoint, shapes_dataset, tmp_path, device, on_gpu, no_tf32
):
    images = shapes_dataset / "images"
    cpu = _predict(tiny_checkpoint, images, tmp_path / "cpu", "cpu")
    fp32 = _predict(tiny_checkpoint, images, tmp_path / "fp32", str(device))
    # --half is CUDA only (refused on the CPU, tests/inference/test_predict.py): the dry run repeats fp32.
    half = _predict(tiny_checkpoint, images, tmp_path / "half", str(device), *(["--half"] if on_gpu else []))
    assert cpu, "the tiny checkpoint finds something at conf 0.2 (tests/conftest.py spreads its scores)"
    assert not _unmatched(cpu, fp32, 1e-4, 1e-3) and not _unmatched(fp32, cpu, 1e-4, 1e-3)
    assert abs(len(half) - len(fp32)) <= max(2, len(fp32) // 10)
    assert not _unmatched(fp32, half, 5e-3, 1e-2), "fp16 loses or moves detections"
    for folder in ("fp32", "half"):  # the annotated copies are written from the GPU run too
        assert sorted(p.name for p in (tmp_path / folder).glob("*.jpg")) == sorted(p.name for p in images.glob("*.jpg"))


@pytest.mark.skipif(
    "CUDAExecutionProvider" not in ort.get_available_providers(),
    reason="onnxruntime without its CUDA provider (onnxruntime-gpu has it)",
)
@pytest.mark.parametrize("nms", [False, True])
def test_onnx_runtime_cuda_provider_matches_the_cpu_provider(tiny_checkpoint, tmp_path, nms):
    path = export_checkpoint(tiny_checkpoint, "onnx", tmp_path / f"tiny_{nms}.onnx", nms=nms, dynamic_batch=True).path
    gpu = ort.InferenceSession(str(path), providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    cpu = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert gpu.get_providers()[0] == "CUDAExecutionProvider"
    images = {"images": sample_images((64, 64), 4).numpy()}
    expected, actual = cpu.run(None, images), gpu.run(None, images)
    if not nms:  # boxes (N, A, 4) and scores (N, A, K): TF32 convolutions on the GPU allow ~1e-3
        for want, got in zip(expected, actual, strict=True):
            np.testing.assert_allclose(got, want, atol=2e-3)
        return
    boxes, scores, labels, counts = actual
    assert np.abs(counts - expected[3]).max() <= 1, (counts, expected[3])  # a box at the threshold may cross it
    for i, n in enumerate(np.minimum(counts, expected[3])):
        np.testing.assert_allclose(scores[i, :n], expected[1][i, :n], atol=2e-3)  # both best first
