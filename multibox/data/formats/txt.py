"""MindSpore-SSD TXT lists: one image a line, `relative/path.jpg x1,y1,x2,y2,cls x1,y1,x2,y2,cls ...`.

Paths are relative to the images root; boxes are 0-based xyxy pixel edges; `cls` is a
0-based index into the class names (`class_names`, else `classes.txt` next to the list,
which the writer emits). A line with only a path is an image without objects.

Lossy: the format holds integers, so the writer rounds boxes to the nearest pixel; it has
no crowd flag (crowd boxes are left out, with a warning); category ids become 1..K; paths
must not contain spaces.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from multibox.data.formats.common import (
    drop_crowd_warning,
    image_size,
    inside_root,
    output_names,
    place_image,
    prepare_output,
    read_class_names,
    with_ids,
)
from multibox.data.records import DetectionSet, ImageRecord
from multibox.errors import MultiboxError


def load_txt(
    images: Path, annotation_file: Path, class_names: Sequence[str] | Path | str | None = None
) -> DetectionSet:
    images, annotation_file = Path(images), Path(annotation_file)
    if not annotation_file.is_file():
        raise MultiboxError(f"{annotation_file}: annotation file not found")
    if not images.is_dir():
        raise MultiboxError(f"{images}: images folder not found (images of {annotation_file})")
    names = read_class_names(class_names)
    if names is None and (annotation_file.parent / "classes.txt").is_file():
        names = read_class_names(annotation_file.parent / "classes.txt")
    if names is None:
        raise MultiboxError(f"{annotation_file}: TXT needs class names: set data.class_names (list or names file)")
    records: list[ImageRecord] = []
    for number, line in enumerate(annotation_file.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{annotation_file}:{number}"
        file = inside_root(images, fields[0], where)
        boxes, labels = [], []
        for item in fields[1:]:
            parts = item.split(",")
            try:
                values = [float(v) for v in parts]
            except ValueError:
                values = []
            if len(parts) != 5 or len(values) != 5 or not values[4].is_integer():
                raise MultiboxError(f"{where}: expected boxes as x1,y1,x2,y2,cls, got {item!r}")
            cls = int(values[4])
            if not 0 <= cls < len(names):
                raise MultiboxError(f"{where}: class {cls} is outside 0..{len(names) - 1} ({len(names)} class names)")
            if values[2] < values[0] or values[3] < values[1]:
                raise MultiboxError(f"{where}: box {item!r} has x2 < x1 or y2 < y1")
            boxes.append(values[:4])
            labels.append(cls + 1)
        width, height = image_size(file, where)
        records.append(
            ImageRecord(
                len(records) + 1,
                file,
                width,
                height,
                np.array(boxes, np.float32),
                np.array(labels, np.int64),
                np.zeros(len(labels), bool),
            )
        )
    return with_ids(records, names)


def write_txt(dataset: DetectionSet, out_dir: Path) -> None:
    """Write `images/`, `annotations.txt` (paths relative to images/) and `classes.txt`."""
    out_dir = prepare_output(out_dir)
    drop_crowd_warning(dataset, "TXT", out_dir)
    lines = []
    for record, name in zip(dataset.records, output_names(dataset), strict=True):
        if any(c.isspace() for c in name):
            raise MultiboxError(f"{record.file}: TXT paths cannot hold spaces")
        place_image(record.file, out_dir / "images" / name)
        keep = ~record.iscrowd
        boxes = np.rint(record.boxes[keep]).astype(np.int64)
        items = [
            f"{x1},{y1},{x2},{y2},{int(c) - 1}"
            for (x1, y1, x2, y2), c in zip(boxes.tolist(), record.labels[keep].tolist(), strict=True)
        ]
        lines.append(" ".join([name, *items]) + "\n")
    (out_dir / "annotations.txt").write_text("".join(lines), encoding="utf-8")
    (out_dir / "classes.txt").write_text("".join(f"{n}\n" for n in dataset.class_names), encoding="utf-8")
