"""YOLO (Ultralytics/Darknet) text labels: `images/<name>` with `labels/<stem>.txt`.

Each label line is `class cx cy w h`, class 0-based, the rest normalised to [0, 1] by the
image's width and height. An image without a label file has no objects. Class names come
from `class_names` (list, names .txt, or a YOLO data .yaml with `names:`), else from
`<root>/data.yaml` (which the writer emits).

Lossy: YOLO has no crowd flag, so the writer leaves crowd (VOC difficult) boxes out, as
Ultralytics' COCO converter does; category ids become 1..K; the writer keeps 10
significant digits, so boxes come back within float32 rounding.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from multibox.data.formats.common import (
    IMAGE_EXTENSIONS,
    drop_crowd_warning,
    image_size,
    output_names,
    place_image,
    prepare_output,
    read_class_names,
    with_ids,
)
from multibox.data.records import DetectionSet, ImageRecord
from multibox.errors import MultiboxError

TOLERANCE = 1e-3  # normalised coordinates may overshoot [0, 1] this much (float rounding of other tools)


SPLIT_FOLDERS = ("train", "val", "valid", "validation", "test")  # subfolders of images/ that are splits, never merged


def load_yolo(
    images: Path,
    labels: Path | None = None,
    class_names: Sequence[str] | Path | str | None = None,
    split: str | None = None,
) -> DetectionSet:
    """Read a YOLO dataset: an Ultralytics data .yaml, a root holding images/ and labels/ (or data.yaml), or an
    images folder, with its labels folder.

    A data .yaml (given as `images`, or `data.yaml` in the root) is read as Ultralytics documents it: `path:`
    the dataset root (relative to the .yaml's folder; the .yaml's folder when absent), `train:` / `val:` an
    images folder under it or a list of them, `names:` a list or {id: name}. `split` ("train" or "val": the
    config's split) picks the key. A root whose images/ holds split folders (train/, val/, ...) and no
    data.yaml is refused, since reading it recursively would merge the splits.
    Without `labels`, a root's `labels/` is used, else Ultralytics' rule: the last `images`
    component of the path replaced by `labels`.
    """
    images = Path(images)
    data_yaml = images if images.suffix.lower() in (".yaml", ".yml") else None
    if data_yaml is None and labels is None and (images / "data.yaml").is_file():
        data_yaml = images / "data.yaml"
    if data_yaml is not None:
        folders = data_yaml_folders(data_yaml, split)
        names = read_class_names(class_names) or read_class_names(data_yaml)
        records: list[ImageRecord] = []
        for folder in folders:
            records += _read_folder(folder, None, names, len(records))
        return with_ids(records, names or [])
    root = images
    if (images / "images").is_dir():
        images = images / "images"
    else:
        root = images.parent
    if not images.is_dir():
        raise MultiboxError(f"{images}: images folder not found")
    split_dirs = sorted(p.name for p in images.iterdir() if p.is_dir() and p.name.lower() in SPLIT_FOLDERS)
    if split_dirs:
        raise MultiboxError(
            f"{images}: holds split folders ({', '.join(split_dirs)}) that would be merged: point data.train.images "
            f"and data.val.images at {images}/<split>, or at an Ultralytics data.yaml with train:/val:"
        )
    names = read_class_names(class_names)
    if names is None:
        names = _names_nearby(images, root)
    if names is None:
        raise MultiboxError(f"{images}: YOLO needs class names: set data.class_names (list, names .txt or data .yaml)")
    return with_ids(_read_folder(images, labels, names, 0), names)


def _names_nearby(images: Path, root: Path) -> list[str] | None:
    """Class names from a data.yaml in the images folder or up to three folders above it, or root/classes.txt."""
    folders = [images, *list(images.absolute().parents)[:3]]
    candidates = [folder / "data.yaml" for folder in folders] + [root / "classes.txt"]
    for candidate in candidates:
        if candidate.is_file():
            return read_class_names(candidate)
    return None


def data_yaml_folders(data_yaml: Path, split: str | None) -> list[Path]:
    """The images folders an Ultralytics data .yaml names for `split` (train or val; None: the one both name)."""
    import yaml

    if not data_yaml.is_file():
        raise MultiboxError(f"{data_yaml}: YOLO data .yaml not found")
    try:
        raw = yaml.safe_load(data_yaml.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise MultiboxError(f"{data_yaml}: invalid YAML: {str(error).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise MultiboxError(f"{data_yaml}: expected a mapping with train:, val: and names:")
    if "val" not in raw and "validation" in raw:
        raw["val"] = raw["validation"]
    base = data_yaml.parent
    if raw.get("path"):
        path = Path(str(raw["path"])).expanduser()
        base = path if path.is_absolute() else (base / path if (base / path).exists() or not path.exists() else path)
    entries = {key: raw.get(key) for key in ("train", "val")}
    if split is None:
        given = {key: value for key, value in entries.items() if value}
        if len({str(value) for value in given.values()}) > 1:
            raise MultiboxError(
                f"{data_yaml}: names different train: and val: folders; choose one (a config's data.train.images / "
                "data.val.images: data.yaml, or data convert --annotations train|val)"
            )
        split = next(iter(given), "train")
    key = "val" if split in ("val", "valid", "validation") else split
    value = raw.get(key)
    if not value:
        raise MultiboxError(f"{data_yaml}: no {key}: entry (the {split} split's images folder)")
    folders = []
    for item in value if isinstance(value, list) else [value]:
        folder = Path(str(item)).expanduser()
        folder = folder if folder.is_absolute() else base / folder
        if folder.suffix.lower() == ".txt":
            raise MultiboxError(f"{data_yaml}: {key}: {item} is an image list file; multibox reads images folders")
        if not folder.is_dir():
            raise MultiboxError(f"{data_yaml}: {key}: images folder {folder} not found")
        folders.append(folder)
    return folders


def _read_folder(images: Path, labels: Path | None, names: list[str] | None, first: int) -> list[ImageRecord]:
    """Records of every image under `images` (recursive), numbered from `first` + 1."""
    labels = Path(labels) if labels is not None else _labels_dir(images)
    if not labels.is_dir():
        raise MultiboxError(f"{labels}: YOLO labels folder not found (labels of {images})")
    if names is None:
        raise MultiboxError(f"{images}: YOLO needs class names: set data.class_names or names: in the data .yaml")
    files = sorted(p for p in images.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    root_abs = images.absolute()
    records = []
    for index, file in enumerate(files):
        label_file = labels / file.relative_to(images).with_suffix(".txt")
        width, height = image_size(file, label_file)
        boxes, classes = _read_labels(label_file, len(names))
        boxes *= np.array([width, height, width, height], np.float32)
        xyxy = np.concatenate([boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2], axis=1)
        records.append(
            ImageRecord(
                first + index + 1,
                root_abs / file.relative_to(images),
                width,
                height,
                xyxy,
                classes + 1,
                np.zeros(len(classes), bool),
            )
        )
    return records


def _labels_dir(images: Path) -> Path:
    if (images.parent / "labels").is_dir() and images.name == "images":
        return images.parent / "labels"
    parts = list(images.absolute().parts)
    if "images" in parts:
        last = len(parts) - 1 - parts[::-1].index("images")
        parts[last] = "labels"
        return Path(*parts)
    return images.parent / "labels"


def _read_labels(path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """cxcywh (normalised, float32) and 0-based classes of one label file (none when it is absent)."""
    if not path.is_file():
        return np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    boxes, classes = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 5:
            raise MultiboxError(f"{path}:{number}: expected 'class cx cy w h' (5 fields), got {len(fields)}")
        try:
            cls = int(fields[0])
            values = [float(v) for v in fields[1:]]
        except ValueError:
            raise MultiboxError(
                f"{path}:{number}: expected an integer class and 4 numbers, got {line.strip()!r}"
            ) from None
        if not 0 <= cls < num_classes:
            raise MultiboxError(
                f"{path}:{number}: class {cls} is outside 0..{num_classes - 1} ({num_classes} class names)"
            )
        cx, cy, w, h = values
        if not (
            w >= 0
            and h >= 0
            and all(-TOLERANCE <= v <= 1 + TOLERANCE for v in (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
        ):
            raise MultiboxError(f"{path}:{number}: box {values} is not normalised to [0, 1]")
        boxes.append(values)
        classes.append(cls)
    return np.array(boxes, np.float32).reshape(-1, 4), np.array(classes, np.int64)


def write_yolo(dataset: DetectionSet, out_dir: Path) -> None:
    """Write `images/`, `labels/` and `data.yaml` (names in label order)."""
    out_dir = prepare_output(out_dir)
    drop_crowd_warning(dataset, "YOLO", out_dir)
    (out_dir / "labels").mkdir()
    for record, name in zip(dataset.records, output_names(dataset), strict=True):
        place_image(record.file, out_dir / "images" / name)
        keep = ~record.iscrowd
        boxes, labels = record.boxes[keep].astype(np.float64), record.labels[keep]
        scale = np.array([record.width, record.height], np.float64)
        centre, size = (boxes[:, :2] + boxes[:, 2:]) / 2 / scale, (boxes[:, 2:] - boxes[:, :2]) / scale
        lines = [
            f"{int(c) - 1} {cx:.10g} {cy:.10g} {w:.10g} {h:.10g}\n"
            for c, (cx, cy), (w, h) in zip(labels.tolist(), centre.tolist(), size.tolist(), strict=True)
        ]
        (out_dir / "labels" / f"{Path(name).stem}.txt").write_text("".join(lines), encoding="utf-8")
    import yaml

    data = {"path": ".", "train": "images", "val": "images", "names": dict(enumerate(dataset.class_names))}
    (out_dir / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
