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


def load_yolo(images: Path, labels: Path | None = None, class_names: Sequence[str] | Path | str | None = None) -> DetectionSet:
    """Read `images` (a root holding images/ and labels/, or an images folder) with its labels folder.

    Without `labels`, a root's `labels/` is used, else Ultralytics' rule: the last `images`
    component of the path replaced by `labels`.
    """
    images = Path(images)
    root = images
    if (images / "images").is_dir():
        images = images / "images"
    else:
        root = images.parent
    if not images.is_dir():
        raise MultiboxError(f"{images}: images folder not found")
    labels = Path(labels) if labels is not None else _labels_dir(images)
    if not labels.is_dir():
        raise MultiboxError(f"{labels}: YOLO labels folder not found (labels of {images})")
    names = read_class_names(class_names)
    if names is None:
        for candidate in (root / "data.yaml", images.parent / "data.yaml", root / "classes.txt"):
            if candidate.is_file():
                names = read_class_names(candidate)
                break
    if names is None:
        raise MultiboxError(f"{images}: YOLO needs class names: set data.class_names (list, names .txt or data .yaml)")
    files = sorted(p for p in images.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    root_abs = images.absolute()
    records = []
    for index, file in enumerate(files):
        label_file = labels / file.relative_to(images).with_suffix(".txt")
        width, height = image_size(file, label_file)
        boxes, classes = _read_labels(label_file, len(names))
        boxes *= np.array([width, height, width, height], np.float32)
        xyxy = np.concatenate([boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2], axis=1)
        records.append(ImageRecord(index + 1, root_abs / file.relative_to(images), width, height, xyxy, classes + 1,
                                   np.zeros(len(classes), bool)))
    return with_ids(records, names)


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
            raise MultiboxError(f"{path}:{number}: expected an integer class and 4 numbers, got {line.strip()!r}") from None
        if not 0 <= cls < num_classes:
            raise MultiboxError(f"{path}:{number}: class {cls} is outside 0..{num_classes - 1} ({num_classes} class names)")
        cx, cy, w, h = values
        if not (w >= 0 and h >= 0 and all(-TOLERANCE <= v <= 1 + TOLERANCE for v in (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))):
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
        lines = [f"{int(c) - 1} {cx:.10g} {cy:.10g} {w:.10g} {h:.10g}\n"
                 for c, (cx, cy), (w, h) in zip(labels.tolist(), centre.tolist(), size.tolist(), strict=True)]
        (out_dir / "labels" / f"{Path(name).stem}.txt").write_text("".join(lines), encoding="utf-8")
    import yaml

    data = {"path": ".", "train": "images", "val": "images", "names": dict(enumerate(dataset.class_names))}
    (out_dir / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
