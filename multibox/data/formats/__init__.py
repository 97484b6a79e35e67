"""Dataset formats: a reader per format (to a :class:`DetectionSet`) and a writer where the format can hold the data.

| format     | reader `images` / `annotations`                   | writer             | lost by the writer             |
|------------|---------------------------------------------------|--------------------|--------------------------------|
| coco       | images folder / instances JSON                    | `write_coco`       | nothing                        |
| voc        | VOC root / split name or file (default: all XML)  | `write_voc`        | sub-pixel coords, category ids |
| yolo       | images/+labels/ root (or images dir) / labels dir | `write_yolo`       | crowd boxes, category ids      |
| txt        | images root / the list file                       | `write_txt`        | sub-pixel coords, iscrowd, ids |
| openimages | root / split (train/validation/test) or bbox CSV  | `write_openimages` | boxless images, category ids   |
| cognata    | Cognata root (recordings) / unused                | none (reader only) |                                |

Formats without category ids get ids 1..K (in class-name order). Image ids are kept by COCO
only; the others number images 1..N in reading order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from multibox.data.formats.coco import load_coco, write_coco
from multibox.data.formats.cognata import load_cognata
from multibox.data.formats.openimages import load_openimages, write_openimages
from multibox.data.formats.txt import load_txt, write_txt
from multibox.data.formats.voc import load_voc, write_voc
from multibox.data.formats.yolo import load_yolo, write_yolo
from multibox.data.records import DetectionSet
from multibox.dataset_formats import FORMAT_NAMES
from multibox.errors import MultiboxError

FORMATS = FORMAT_NAMES


@dataclass(frozen=True)
class ReadOptions:
    """What a reader may need besides the images and annotations paths (each uses its own)."""

    class_names: Sequence[str] | Path | str | None = None
    classes: Sequence[str] | None = None
    cognata: dict[str, Any] | None = None
    split: str | None = None


def _read_coco(images: Path, annotations: Path | str | None, options: ReadOptions) -> DetectionSet:
    if annotations is None:  # the writer's layout
        images, annotations = images / "images", images / "annotations.json"
    return load_coco(images, Path(annotations))


def _read_voc(images: Path, annotations: Path | str | None, options: ReadOptions) -> DetectionSet:
    return load_voc(images, annotations, options.class_names)


def _read_yolo(images: Path, annotations: Path | str | None, options: ReadOptions) -> DetectionSet:
    split = options.split
    if annotations is not None and str(annotations) in ("train", "val") and not Path(annotations).is_dir():
        split, annotations = str(annotations), None  # a split of the root's data.yaml (convert --annotations val)
    return load_yolo(images, None if annotations is None else Path(annotations), options.class_names, split)


def _read_txt(images: Path, annotations: Path | str | None, options: ReadOptions) -> DetectionSet:
    if annotations is None:  # the writer's layout
        images, annotations = images / "images", images / "annotations.txt"
    return load_txt(images, Path(annotations), options.class_names)


def _read_openimages(images: Path, annotations: Path | str | None, options: ReadOptions) -> DetectionSet:
    return load_openimages(images, "train" if annotations is None else annotations, options.classes)


def _read_cognata(images: Path, annotations: Path | str | None, options: ReadOptions) -> DetectionSet:
    return load_cognata(images, **(options.cognata or {}))


# One reader per name of multibox.dataset_formats.FORMATS, one writer per writable one (a test holds them equal).
READERS: dict[str, Callable[[Path, Path | str | None, ReadOptions], DetectionSet]] = {
    "coco": _read_coco,
    "voc": _read_voc,
    "yolo": _read_yolo,
    "txt": _read_txt,
    "openimages": _read_openimages,
    "cognata": _read_cognata,
}
WRITERS: dict[str, Callable[[DetectionSet, Path], None]] = {
    "coco": write_coco,
    "voc": write_voc,
    "yolo": write_yolo,
    "txt": write_txt,
    "openimages": write_openimages,
}

__all__ = [
    "FORMATS",
    "READERS",
    "WRITERS",
    "ReadOptions",
    "load_dataset",
    "write_dataset",
    "convert",
    "load_coco",
    "load_voc",
    "load_yolo",
    "load_txt",
    "load_openimages",
    "load_cognata",
    "write_coco",
    "write_voc",
    "write_yolo",
    "write_txt",
    "write_openimages",
]


def load_dataset(
    fmt: str,
    images: Path,
    annotations: Path | str | None = None,
    class_names: Sequence[str] | Path | str | None = None,
    classes: Sequence[str] | None = None,
    cognata: dict[str, Any] | None = None,
    split: str | None = None,
) -> DetectionSet:
    """Read any format. For coco and txt, `annotations=None` means the layout their writers make
    (`images/` plus `annotations.json` / `annotations.txt` inside `images`). `split` (train or val) picks the
    split of a YOLO data .yaml."""
    reader = READERS.get(fmt)
    if reader is None:
        raise MultiboxError(f"unknown dataset format {fmt!r} (expected one of {', '.join(FORMATS)})")
    return reader(Path(images), annotations, ReadOptions(class_names, classes, cognata, split))


def write_dataset(fmt: str, dataset: DetectionSet, out_dir: Path) -> None:
    if fmt not in WRITERS:
        raise MultiboxError(f"no writer for format {fmt!r} (writers: {', '.join(WRITERS)})")
    WRITERS[fmt](dataset, Path(out_dir))


def convert(source_format: str, target_format: str, source: Path, target: Path, **read_options: Any) -> DetectionSet:
    """Read `source` as `source_format` and write it to the new folder `target` as `target_format`."""
    if target_format not in WRITERS:
        raise MultiboxError(f"no writer for format {target_format!r} (writers: {', '.join(WRITERS)})")
    target = Path(target)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise MultiboxError(f"{target}: already exists and is not empty; choose a new folder")
    dataset = load_dataset(source_format, source, **read_options)
    write_dataset(target_format, dataset, target)
    return dataset
