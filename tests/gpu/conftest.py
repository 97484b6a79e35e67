"""The GPU tests: marked ``cuda`` and skipped without a CUDA device, so the default run on a CPU-only machine only
collects them. ``benchmarks/gpu_suite.sh`` runs them on a lent GPU (``pytest -m cuda tests/gpu``).

``MULTIBOX_GPU_TESTS_DEVICE=cpu`` runs the same tests on the CPU (gloo instead of NCCL, fp32 instead of fp16
where the CPU has no fp16): a dry run that checks the tests themselves before a GPU is lent; the comparisons
against the CPU then compare the CPU with itself.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from multibox.data.synth import make_synthetic_dataset

DEVICE = os.environ.get("MULTIBOX_GPU_TESTS_DEVICE", "cuda")
HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test in this folder gets the ``cuda`` mark, and a skip when there is no GPU to run it on."""
    missing = DEVICE.startswith("cuda") and not torch.cuda.is_available()
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.cuda)
            if missing:
                item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU (benchmarks/gpu_suite.sh runs these)"))


@pytest.fixture(scope="session")
def device() -> torch.device:
    return torch.device(DEVICE)


@pytest.fixture(scope="session")
def on_gpu(device: torch.device) -> bool:
    return device.type == "cuda"


@pytest.fixture
def no_tf32():
    """Exact fp32 on the GPU for comparisons at 1e-4: Ampere and later run fp32 convolutions in TF32 by default."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.fixture(scope="session")
def gpu_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 train and 4 val synthetic JPEGs of 80x96 (H x W): ``train/`` and ``val/`` with COCO annotations."""
    root = tmp_path_factory.mktemp("gpu_data")
    make_synthetic_dataset(root / "train", 8, (80, 96), seed=0)
    make_synthetic_dataset(root / "val", 4, (80, 96), seed=1)
    return root


@pytest.fixture(scope="session")
def train_config(gpu_data: Path, device: torch.device, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SSDLite training config on `device`: 2 epochs of 2 steps (batch 4, 64x64), validation each epoch.
    Tests add ``train.output_dir=...`` and their own settings as KEY=VALUE overrides."""
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    text = (
        f"data:\n  train: {{images: {gpu_data}/train/images, annotations: {gpu_data}/train/annotations.json}}\n"
        f"  val: {{images: {gpu_data}/val/images, annotations: {gpu_data}/val/annotations.json}}\n"
        "  input_size: [64, 64]\n  batch_size: 4\n  num_workers: 0\n"
        "model: {name: ssdlite320_mobilenet_v3_large, width_mult: 0.25}\n"
        "optimizer: {name: adamw, lr: 0.003}\n"
        "eval: {score_threshold: 0.01, max_detections: 20}\n"
        f"train: {{epochs: 2, accelerator: {accelerator}, progress: false, log_every_n_steps: 1}}\n"
    )
    path = tmp_path_factory.mktemp("gpu_config") / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path
