"""data.decode=gpu, run on the CPU through the same code path: batches equal to the OpenCV path's,
augmentation that moves boxes with the pixels, bad files skipped, and a training run end to end."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from multibox.cli import main
from multibox.config import parse_config
from multibox.data.datamodule import DetectionDataModule
from multibox.data.gpu_decode import build_gpu_transform, decode_images, transform_sample
from multibox.data.synth import make_synthetic_dataset


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("gpu") / "data", 8, (64, 80), seed=4)


def _config(data_dir: Path, decode: str, **data):
    split = {"images": str(data_dir / "images"), "annotations": str(data_dir / "annotations.json")}
    raw = {
        "data": {
            "input_size": [64, 64],
            "batch_size": 4,
            "num_workers": 0,
            "val_split": 0.5,
            "decode": decode,
            "train": split,
            **data,
        }
    }
    return parse_config(raw)


def test_validation_batches_equal_the_opencv_path(shapes):
    cpu, gpu = DetectionDataModule(_config(shapes, "cpu")), DetectionDataModule(_config(shapes, "gpu"))
    pairs = list(zip(cpu.val_dataloader(), gpu.val_dataloader(), strict=True))
    assert len(pairs) == 1
    for expected, encoded in pairs:
        assert "encoded" in encoded and "images" not in encoded  # the workers did not decode
        assert isinstance(encoded["encoded"], torch.Tensor)  # one tensor per batch, not one per file (fd limits)
        batch = gpu.prepare_batch(encoded, "cpu")
        for key in ("labels", "image_ids", "orig_sizes"):
            assert torch.equal(batch[key], expected[key]), key
        torch.testing.assert_close(batch["boxes"], expected["boxes"], atol=1e-6, rtol=0)
        # same libjpeg decode, and bilinear without antialiasing is OpenCV's INTER_LINEAR: equal here;
        # allow one grey level for rounding differences of other resize ratios and builds
        assert batch["images"].dtype == torch.uint8 and batch["images"].shape == expected["images"].shape
        assert (batch["images"].int() - expected["images"].int()).abs().max() <= 1


def test_training_augmentation_moves_the_boxes_with_the_pixels(shapes):
    """A white square on black: after random IoU crop, flip and resize, the box must still frame white pixels."""
    image = torch.zeros(3, 120, 160, dtype=torch.uint8)
    image[:, 30:70, 20:60] = 255  # left of centre: a horizontal flip puts it right of centre
    boxes, labels = torch.tensor([[20.0, 30.0, 60.0, 70.0]]), torch.tensor([1])
    transform = build_gpu_transform("ssdlite", (64, 64), train=True)
    centre_left = set()
    for seed in range(12):
        torch.manual_seed(seed)
        out, out_boxes, out_labels = transform_sample(image, boxes, labels, transform)
        assert out.shape == (3, 64, 64) and out.dtype == torch.uint8
        if not len(out_boxes):
            continue  # the crop may drop the object (as SSD's IoU crop does)
        x1, y1, x2, y2 = out_boxes[0].round().int().tolist()
        assert 0 <= x1 < x2 <= 64 and 0 <= y1 < y2 <= 64 and out_labels.tolist() == [1]
        inside = out[0, y1 + 1 : y2 - 1, x1 + 1 : x2 - 1].float().mean()
        assert inside > 200, (seed, out_boxes)
        centre_left.add(x1 + x2 < 64)
    assert centre_left == {True, False}  # flipped in some draws, not in others


def test_corrupt_files_are_skipped_and_pngs_decoded(shapes, tmp_path):
    good = (shapes / "images" / "000000.jpg").read_bytes()
    png = tmp_path / "x.png"
    cv2.imwrite(str(png), np.full((20, 30, 3), 7, np.uint8))
    encoded = [
        torch.frombuffer(bytearray(data), dtype=torch.uint8)
        for data in (good, good[:40] + b"\x00" * 40, png.read_bytes(), b"not an image at all")
    ]
    images = decode_images(encoded, "cpu")
    assert images[0].shape == (3, 64, 80) and images[2].shape == (3, 20, 30) and int(images[2][0, 0, 0]) == 7
    assert images[1] is None and images[3] is None

    data = tmp_path / "data"
    make_synthetic_dataset(data, 4, (64, 64), seed=1)
    (data / "images" / "000001.jpg").write_bytes(b"")
    module = DetectionDataModule(_config(data, "gpu", val_split=0.0, batch_size=4))
    with pytest.warns(UserWarning, match="000001.jpg: skipped"):
        batches = [module.prepare_batch(b, "cpu") for b in module.train_dataloader()]
    assert sum(len(b["image_ids"]) for b in batches) == 3 and sum(int(b["skipped"]) for b in batches) == 1


def test_training_and_eval_run_with_gpu_decoding(shapes, tmp_path, one_thread):
    config = {
        "data": {
            "input_size": [64, 64],
            "batch_size": 2,
            "num_workers": 0,
            "val_split": 0.25,
            "decode": "gpu",
            "augment": "ssd",
            "train": {"images": str(shapes / "images"), "annotations": str(shapes / "annotations.json")},
        },
        "model": {"name": "ssdlite320_mobilenet_v3_large", "width_mult": 0.25},
        "train": {"epochs": 1, "output_dir": str(tmp_path / "run"), "log_every_n_steps": 1, "report": False},
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    assert main(["train", "-c", str(path)]) == 0
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["map"] >= 0
    assert main(["eval", "--weights", str(tmp_path / "run" / "checkpoints" / "last.ckpt")]) == 0


def test_a_list_of_albumentations_transforms_is_refused_with_gpu_decoding(shapes):
    from multibox.errors import MultiboxError

    with pytest.raises(MultiboxError, match="data.decode"):
        _config(shapes, "gpu", augment=[{"name": "HorizontalFlip", "p": 0.5}])
