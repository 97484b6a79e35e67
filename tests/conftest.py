"""Shared test setup: two CPU threads (one per pytest-xdist worker), deterministic seeds, a tiny checkpoint, a tiny
trained run and a few synthetic images. Session-scoped: built once per worker for every test that asks (the default
run must stay within ~4 minutes)."""

import os

# Two threads for a lone pytest; one per worker under pytest-xdist (`make test` runs two workers on two cores).
os.environ.setdefault("OMP_NUM_THREADS", "1" if os.environ.get("PYTEST_XDIST_WORKER") else "2")

from pathlib import Path

import pytest
import torch

from multibox.cli import main
from multibox.config import load_config
from multibox.data.synth import SHAPES, make_synthetic_dataset
from multibox.engine.module import DetectionModule
from multibox.models.detector import set_norm_momentum

THREADS = 1 if os.environ.get("PYTEST_XDIST_WORKER") else 2
torch.set_num_threads(THREADS)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """One intra-op thread for training-step tests: OpenMP threads spin-wait on each other,
    so two threads on a 2-core machine that is doing anything else stall (10-50x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TINY = [
    "model.name=ssdlite320_mobilenet_v3_large",
    "model.width_mult=0.25",
    "data.input_size=[64,64]",
    "eval.max_detections=20",
]


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A checkpoint as training writes it (config, class names, category ids, detector.* weights)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    module = DetectionModule(load_config(None, TINY).to_dict(), list(SHAPES), list(range(1, len(SHAPES) + 1)))
    num_classes = len(SHAPES) + 1
    with torch.no_grad():
        # Untrained, every score is 1/6 and the features vanish under the initial BatchNorm statistics:
        # spread the class logits and fit the statistics to some images, so detections depend on the image.
        for level in module.detector.model.head.classification_head.module_list:
            level[1].weight.normal_(0.0, 0.05)  # 1x1 conv to (anchors x classes)
            level[1].bias.zero_()[0::num_classes] = -1.0  # channel a * C + c: background logits lowered
        set_norm_momentum(module.detector, 1.0)
        module.train()(torch.rand(8, 3, 64, 64))
    path = tmp_path_factory.mktemp("ckpt") / "tiny.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    torch.set_num_threads(threads)
    return path


@pytest.fixture(scope="session")
def shapes_dataset(tmp_path_factory) -> Path:
    """Five 64x64 synthetic images in ``images/`` with their COCO ``annotations.json`` (ids 1..5)."""
    return make_synthetic_dataset(tmp_path_factory.mktemp("shapes") / "data", 5, (64, 64), seed=3)


TINY_RUN = [
    "model.name=ssdlite320_mobilenet_v3_large",
    "model.width_mult=0.25",
    "data.input_size=[64,64]",
    "data.batch_size=4",
    "data.num_workers=0",
    "train.epochs=1",
    "train.progress=false",
    "train.accelerator=cpu",
    "optimizer.name=adamw",
    "optimizer.lr=0.003",
    "eval.max_detections=50",
]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """One real `multibox train` run, shared by the eval, predict, report and CLI tests (treat it as read-only):
    ``train/`` (8) and ``val/`` (5) synthetic 64x64 images, ``config.yaml`` naming them, and ``run/`` as training
    leaves it (checkpoints, metrics, report) after one epoch of a tiny SSDLite with the TINY_RUN settings."""
    root = tmp_path_factory.mktemp("tiny_run")
    make_synthetic_dataset(root / "train", 8, (64, 64), seed=0)
    make_synthetic_dataset(root / "val", 5, (64, 64), seed=1)
    config = root / "config.yaml"
    config.write_text(
        f"data:\n  train: {{images: {root}/train/images, annotations: {root}/train/annotations.json}}\n"
        f"  val: {{images: {root}/val/images, annotations: {root}/val/annotations.json}}\n"
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # see one_thread
    try:
        assert main(["train", "-c", str(config), f"train.output_dir={root / 'run'}", *TINY_RUN]) == 0
    finally:
        torch.set_num_threads(threads)
    return root
