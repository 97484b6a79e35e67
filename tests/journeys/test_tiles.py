"""Journey: small objects in large frames. Tiled training, then sliced `eval` and `predict`, through the
real `multibox` console script run from the config's folder, and the Python `Detector` with tiles."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from cli_runner import run_cli

import multibox
from multibox.data.synth import make_synthetic_dataset
from multibox.errors import MultiboxError
from multibox.inference.api import Detector

REPO = Path(multibox.__file__).resolve().parent.parent
CONFIG = """\
data:
  format: coco
  train: {images: data/images, annotations: data/annotations.json}
  input_size: [64, 64]
  batch_size: 2
  num_workers: 0
  augment: none
  tiles: {size: [64, 64], overlap: 0.2, sampler: objects, keep_min_visible: 0.5}
model: {name: ssdlite320_mobilenet_v3_large, width_mult: 0.25}
train: {epochs: 1, output_dir: run, progress: false, report: false, accelerator: cpu}
eval: {max_detections: 20}
"""


def multibox_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """The command line from ``cwd``, in-process (tests/cli_runner.py)."""
    return run_cli(*args, cwd=cwd)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A project folder (config, 4 frames of 96x160 with small shapes) after one epoch of tiled training."""
    folder = tmp_path_factory.mktemp("tiles")
    make_synthetic_dataset(folder / "data", 4, (96, 160), seed=5, max_objects=4, object_sizes=(0.12, 0.3))
    (folder / "config.yaml").write_text(CONFIG, encoding="utf-8")
    done = multibox_cli(folder, "train", "-c", "config.yaml")
    assert done.returncode == 0, done.stderr[-2000:]
    assert (folder / "run" / "checkpoints" / "last.ckpt").is_file()
    return folder


def test_sliced_eval_and_predict_through_the_cli(trained: Path):
    ckpt = "run/checkpoints/last.ckpt"
    done = multibox_cli(
        trained,
        "eval",
        "--weights",
        ckpt,
        "--tile",
        "64x64",
        "--overlap",
        "0.25",
        "--out",
        "m.json",
        "data.val={images: data/images, annotations: data/annotations.json}",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((trained / "m.json").read_text())
    assert {"map", "map_50", "map_small", "map_medium", "map_large"} <= metrics.keys()
    done = multibox_cli(
        trained,
        "predict",
        "--weights",
        ckpt,
        "--source",
        "data/images",
        "--out",
        "pred",
        "--tile",
        "64x64",
        "--full-frame",
        "--merge",
        "merge",
        "--conf",
        "0.01",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((trained / "pred" / "predictions.json").read_text())
    assert {r["image_id"] for r in results} <= {1, 2, 3, 4}
    assert all(0 <= r["bbox"][0] and r["bbox"][0] + r["bbox"][2] <= 160.01 for r in results)  # frame pixels, not tile


@pytest.mark.parametrize(
    "args,message",
    [
        (["--overlap", "1"], "error: overlap: must be in [0, 1), got 1"),
        (["--overlap", "-0.1"], "error: overlap: must be in [0, 1), got -0.1"),
        (["--tile", "4x4"], "error: tile: 4x4 is smaller than the model's smallest stride"),
    ],
)
def test_bad_tiles_are_one_line_errors(trained: Path, args, message):
    extra = [] if "--tile" in args else ["--tile", "64x64"]
    done = multibox_cli(
        trained,
        "predict",
        "--weights",
        "run/checkpoints/last.ckpt",
        "--source",
        "data/images",
        "--out",
        "bad_" + args[-1].replace("-", "m"),
        *extra,
        *args,
    )
    assert done.returncode == 2 and done.stderr.startswith(message) and len(done.stderr.strip().splitlines()) == 1, (
        done.stderr
    )


def test_python_api_slices_frames_of_mixed_sizes(trained: Path):
    detector = Detector.from_checkpoint(trained / "run/checkpoints/last.ckpt", device="cpu", conf=0.0, tile=(64, 64))
    frames = [np.full((96, 160, 3), 90, np.uint8), np.full((50, 200, 3), 160, np.uint8)]
    with pytest.warns(UserWarning, match="larger than a 50x200 frame"):  # its height is the frame's, its width tiled
        big, wide = detector(frames)
    assert big.image_size == (96, 160) and wide.image_size == (50, 200)
    assert (
        len(big) and (big.boxes[:, 2] <= 160).all() and (wide.boxes[:, 3] <= 50).all() and (wide.boxes[:, 2] > 64).any()
    )
    with pytest.raises(MultiboxError, match="overlap"):
        Detector.from_checkpoint(trained / "run/checkpoints/last.ckpt", device="cpu", tile=(64, 64), overlap=1.0)


def test_bad_tile_config_is_a_one_line_error(trained: Path):
    done = multibox_cli(trained, "train", "-c", "config.yaml", "data.tiles.overlap=1.0", "train.output_dir=run2")
    assert done.returncode == 2 and done.stderr.startswith(
        "error: override data.tiles.overlap=1.0: data.tiles.overlap:"
    ), done.stderr
    done = multibox_cli(trained, "train", "-c", "config.yaml", "data.tiles.size=[4,4]", "train.output_dir=run3")
    assert done.returncode == 2 and "data.tiles.size: 4x4 is smaller than the model's smallest stride" in done.stderr, (
        done.stderr
    )


@pytest.mark.parametrize("fmt", ["coco", "voc", "yolo", "txt", "openimages", "cognata"])
def test_tiles_crop_the_frames_of_every_format(fmt, tmp_path, journey):
    """data.tiles works after any reader: with a config written by hand for each format, the training batches are
    16x20 crops of the 48x64 frames at native scale (resized to the 32x40 input), every box inside the crop.
    Objects are 12-29 px: in a 20-px-wide crop some span over half its width; in the whole 64-px-wide frame
    none can."""
    from multibox.config import load_config
    from multibox.data.datamodule import DetectionDataModule

    assert fmt in journey.formats
    data = journey.write_dataset(tmp_path, fmt)
    tiles = {"size": [16, 20], "overlap": 0.2, "sampler": "objects", "keep_min_visible": 0.3}
    config = load_config(journey.write_config(tmp_path, {**data, "input_size": [32, 40], "tiles": tiles}, name=fmt))
    widths = []
    for _ in range(3):  # three epochs of crops
        for batch in DetectionDataModule(config).train_dataloader():
            assert tuple(batch["images"].shape[1:]) == (3, 32, 40)
            boxes = batch["boxes"][batch["labels"] > 0]  # normalised to the crop
            assert (boxes[:, 2:] > boxes[:, :2]).all() and boxes.min() >= 0 and boxes.max() <= 1
            widths += (boxes[:, 2] - boxes[:, 0]).tolist()
    assert widths, "the objects sampler centres crops on objects"
    assert max(widths) > 0.5, max(widths)
