"""Journey fixtures: datasets laid out as each format's own tools lay them out, configs written by hand with
relative paths and split names, and the `multibox` command line run from outside the repo (in-process by default,
as the console script with ``console=True`` or under ``MULTIBOX_TEST_CONSOLE=1``: tests/cli_runner.py).

Reuse in a new ``tests/journeys/test_<topic>.py``:

- ``journey.write_dataset(folder, fmt)`` (the ``journey`` fixture holds these helpers) writes a tiny dataset
  of that format under ``folder/<fmt>`` and returns the
  ``data:`` section (paths relative to ``folder/cfg``, where :func:`write_config` puts the config);
- ``write_config(folder, data, **sections)`` writes ``folder/cfg/<name>.yaml`` with the tiny model settings
  (``train.report: false``: a journey that checks the report's pictures turns it on);
- ``multibox(*args, cwd=...)`` runs the command line and returns the finished process; ``ok(...)`` also
  asserts exit status 0 and shows stderr when not;
- the session fixtures ``journey_root`` (a working folder outside the repo) and ``format_run``
  (test_formats.py: one trained run
  per format) are shared so that each dataset is written and trained once.

Paths in these configs resolve from the config's folder; the commands run with the working directory elsewhere
(``journey_root/work``), so a path that resolved from the working directory would fail.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_runner import run_cli

from multibox.data.formats import load_dataset
from multibox.data.formats import write_dataset as write_format
from multibox.data.formats.cognata import LABEL_MAP
from multibox.data.formats.openimages import write_openimages
from multibox.data.formats.voc import write_voc
from multibox.data.synth import make_synthetic_dataset

FORMATS = ("coco", "voc", "yolo", "txt", "openimages", "cognata")
IMAGE_SIZE = (48, 64)  # H, W of the written images
TRAIN_IMAGES, VAL_IMAGES = 4, 2
# A tiny model and one short epoch: what every journey config starts from (sections merged by write_config).
TINY: dict[str, Any] = {
    "model": {"name": "ssdlite320_mobilenet_v3_large", "width_mult": 0.25},
    "data": {"input_size": [64, 64], "batch_size": 2, "num_workers": 0, "augment": "none"},
    "train": {"epochs": 1, "progress": False, "report": False, "accelerator": "cpu", "log_every_n_steps": 1},
    "optimizer": {"name": "adamw", "lr": 0.001},
    "eval": {"max_detections": 20},
}


def multibox(*args: str | Path, cwd: Path, timeout: float = 600, console: bool = False) -> subprocess.CompletedProcess:
    """`multibox ARGS` from ``cwd``: in this process by default, the installed console script with ``console``
    (and for every run under ``MULTIBOX_TEST_CONSOLE=1``, as ``make test-all`` sets); see tests/cli_runner.py."""
    return run_cli(*args, cwd=cwd, console=console, timeout=timeout)


def ok(*args: str | Path, cwd: Path, console: bool = False) -> subprocess.CompletedProcess:
    """`multibox` that must succeed; the failure shows the command and its stderr."""
    done = multibox(*args, cwd=cwd, console=console)
    assert done.returncode == 0, f"multibox {' '.join(map(str, args))} -> {done.returncode}\n{done.stderr[-3000:]}"
    return done


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = (
            _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
        )
    return merged


def write_config(folder: Path, data: dict[str, Any], name: str = "journey", **sections: dict[str, Any]) -> Path:
    """`folder/cfg/<name>.yaml`: TINY merged with `data` (the data section) and any other sections."""
    config = _merge(TINY, {"data": data, **sections})
    path = folder / "cfg" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def write_dataset(
    folder: Path, fmt: str, seed: int = 0, train: int = TRAIN_IMAGES, val: int = VAL_IMAGES
) -> dict[str, Any]:
    """A tiny dataset of `fmt` under ``folder/<fmt>``; returns the config's data section, relative to folder/cfg."""
    source = make_synthetic_dataset(
        folder / ".synth" / f"{fmt}-{seed}",
        train + val,
        IMAGE_SIZE,
        seed,
        max_objects=3,
        image_ext=".png",
        object_sizes=(0.25, 0.6),
    )
    dataset = load_dataset("coco", source / "images", source / "annotations.json")
    parts = dataset.subset(range(train)), dataset.subset(range(train, train + val)), dataset
    root = folder / fmt
    data = globals()[f"_write_{fmt}"](root, parts)
    return {"format": fmt, **data}


def _write_coco(root: Path, parts: tuple) -> dict[str, Any]:
    """COCO's own layout: images/<split>/ and annotations/instances_<split>.json."""
    data = {}
    for split, part in zip(("train", "val"), parts, strict=False):
        write_format("coco", part, root / ".tmp" / split)
        shutil.move(root / ".tmp" / split / "images", root / "images" / split)
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        shutil.move(root / ".tmp" / split / "annotations.json", root / "annotations" / f"instances_{split}.json")
        data[split] = {
            "images": f"../coco/images/{split}",
            "annotations": f"../coco/annotations/instances_{split}.json",
        }
    shutil.rmtree(root / ".tmp")
    return data


def _write_voc(root: Path, parts: tuple) -> dict[str, Any]:
    """VOCdevkit/VOC2012 with ImageSets/Main/train.txt and val.txt: split names, not paths."""
    voc = root / "VOCdevkit" / "VOC2012"
    both = parts[2]
    write_voc(both, voc, split="trainval")
    for split, part in zip(("train", "val"), parts, strict=False):
        ids = "".join(f"{record.file.stem}\n" for record in part.records)
        (voc / "ImageSets" / "Main" / f"{split}.txt").write_text(ids, encoding="utf-8")
    return {split: {"images": "../voc/VOCdevkit/VOC2012", "annotations": split} for split in ("train", "val")}


def _write_yolo(root: Path, parts: tuple) -> dict[str, Any]:
    """Ultralytics: images/<split>, labels/<split> and data.yaml with the names."""
    for split, part in zip(("train", "val"), parts, strict=False):
        write_format("yolo", part, root / ".tmp" / split)
        for kind in ("images", "labels"):
            (root / kind).mkdir(parents=True, exist_ok=True)
            shutil.move(root / ".tmp" / split / kind, root / kind / split)
    names = dict(enumerate(parts[0].class_names))
    text = yaml.safe_dump({"path": ".", "train": "images/train", "val": "images/val", "names": names}, sort_keys=False)
    (root / "data.yaml").write_text(text, encoding="utf-8")
    shutil.rmtree(root / ".tmp")
    return {
        "class_names": "../yolo/data.yaml",
        **{
            split: {"images": f"../yolo/images/{split}", "annotations": f"../yolo/labels/{split}"}
            for split in ("train", "val")
        },
    }


def _write_txt(root: Path, parts: tuple) -> dict[str, Any]:
    """One images/ folder, a list file per split (image x1,y1,x2,y2,class ...) and classes.txt."""
    both = parts[2]
    write_format("txt", both, root)
    lines = (root / "annotations.txt").read_text(encoding="utf-8").splitlines(keepends=True)
    (root / "annotations.txt").unlink()
    (root / "train.txt").write_text("".join(lines[: len(parts[0])]), encoding="utf-8")
    (root / "val.txt").write_text("".join(lines[len(parts[0]) :]), encoding="utf-8")
    return {
        "class_names": "../txt/classes.txt",
        **{split: {"images": "../txt/images", "annotations": f"../txt/{split}.txt"} for split in ("train", "val")},
    }


def _write_openimages(root: Path, parts: tuple) -> dict[str, Any]:
    """Open Images: sub-<split>-annotations-bbox.csv and <split>/ folders in one root; split names."""
    write_openimages(parts[0], root, "train")
    write_openimages(parts[1], root / ".tmp", "validation")
    shutil.move(root / ".tmp" / "validation", root / "validation")
    shutil.move(root / ".tmp" / "sub-validation-annotations-bbox.csv", root / "sub-validation-annotations-bbox.csv")
    shutil.rmtree(root / ".tmp")
    return {
        "classes": list(parts[0].class_names),  # without it each split keeps only the classes it holds
        "train": {"images": "../openimages", "annotations": "train"},
        "val": {"images": "../openimages", "annotations": "validation"},
    }


def _write_cognata(root: Path, parts: tuple) -> dict[str, Any]:
    """MLCommons Cognata: <split>/<recording>/<camera>_png/*.png paired with <camera>_ann/*.csv."""
    raw_ids = list(LABEL_MAP)  # label k of the synthetic set becomes the k-th Cognata class
    for split, part in zip(("train", "val"), parts, strict=False):
        recording = root / split / f"recording_{split}"
        for folder in ("Cognata_Camera_01_8M_png", "Cognata_Camera_01_8M_ann"):
            (recording / folder).mkdir(parents=True, exist_ok=True)
        for index, record in enumerate(part.records):
            shutil.copyfile(record.file, recording / "Cognata_Camera_01_8M_png" / f"{index:05d}.png")
            with (recording / "Cognata_Camera_01_8M_ann" / f"{index:05d}.csv").open("w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(["bounding_box_2D", "object_class", "object_class_name", "center_distance"])
                for box, label in zip(record.boxes.tolist(), record.labels.tolist(), strict=False):
                    raw = raw_ids[label - 1]
                    writer.writerow([str([round(v, 2) for v in box]), raw, LABEL_MAP[raw], 20.0])
    return {split: {"images": f"../cognata/{split}"} for split in ("train", "val")}


def dataset_class_names(config: Path) -> list[str]:
    """The class names the config's training data has, read by the library (what metrics.json must list)."""
    from multibox.config import load_config
    from multibox.data.datamodule import load_split

    loaded = load_config(config)
    return list(load_split(loaded.data.train, "train", loaded.data.format, loaded.data).class_names)


@pytest.fixture(scope="session")
def journey_root(tmp_path_factory) -> Path:
    """A session folder outside the repo: datasets and configs go here, commands run from ``work/``."""
    root = tmp_path_factory.mktemp("journeys")
    (root / "work").mkdir()
    return root


class Journey:
    """The helpers above as one fixture (test modules cannot import conftest under --import-mode=importlib)."""

    formats = FORMATS
    tiny = TINY
    multibox = staticmethod(multibox)
    ok = staticmethod(ok)
    write_dataset = staticmethod(write_dataset)
    write_config = staticmethod(write_config)
    dataset_class_names = staticmethod(dataset_class_names)


@pytest.fixture(scope="session")
def journey() -> type[Journey]:
    """``journey.write_dataset(folder, "voc")``, ``journey.write_config(...)``, ``journey.ok("train", cwd=...)``."""
    return Journey
