"""MLCommons Cognata layout (reader only): `<root>/<recording>/<camera>_png/*.png` paired by
sorted order with `<root>/<recording>/<camera>_ann/*.csv`.

Each CSV has a header row; used columns: `bounding_box_2D` ("[x1, y1, x2, y2]" pixels),
`object_class` (raw integer id), `object_class_name` (for messages) and `center_distance`.
Filters as in mlcommons/abtf-ssd-pytorch: boxes with area < `min_area`, a side < `min_side`
or a distance > `max_distance` are dropped, as are `ignored_classes` (pole, parking, fence)
and raw classes outside the fixed 14-class label map below; at most `max_boxes` per image.
Labels 1..14 follow LABEL_MAP's order and are also the category ids.
"""

from __future__ import annotations

import csv
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from multibox.data.formats.common import csv_columns, image_size, inside_root, with_ids
from multibox.data.records import DetectionSet, ImageRecord
from multibox.errors import MultiboxError

# raw Cognata class id -> name, in label order 1..14
LABEL_MAP: dict[int, str] = {
    28: "Traffic_light",
    29: "Props",
    33: "TrafficSign",
    8: "Car",
    36: "Van",
    13: "Rider",
    11: "Motorcycle",
    35: "Bicycle",
    14: "Pedestrian",
    9: "Truck",
    48: "PersonalMobility",
    10: "Bus",
    46: "Trailer",
    44: "Animal",
}
COLUMNS = ("bounding_box_2D", "object_class", "object_class_name", "center_distance")


def load_cognata(
    root: Path,
    min_area: float = 50.0,
    min_side: float = 8.0,
    max_distance: float = 300.0,
    ignored_classes: Sequence[int] = (2, 25, 31),
    max_boxes: int = 500,
    recordings: Sequence[str] | None = None,
    cameras: Sequence[str] | None = None,
) -> DetectionSet:
    root = Path(root)
    if not root.is_dir():
        raise MultiboxError(f"{root}: Cognata root not found")
    if any(root.glob("*_png")):
        folders = [root]  # the root is one recording
    else:
        folders = sorted(p for p in root.iterdir() if p.is_dir() and (recordings is None or p.name in recordings))
    label_of = {raw: label for label, raw in enumerate(LABEL_MAP, start=1)}
    ignored = {int(c) for c in ignored_classes}
    records: list[ImageRecord] = []
    unmapped = 0
    for folder in folders:
        for png_dir in sorted(folder.glob("*_png")):
            camera = png_dir.name[: -len("_png")]
            if cameras is not None and camera not in cameras:
                continue
            ann_dir = folder / f"{camera}_ann"
            if not ann_dir.is_dir():
                raise MultiboxError(f"{png_dir}: no matching annotation folder {ann_dir.name}")
            images, tables = sorted(png_dir.glob("*.png")), sorted(ann_dir.glob("*.csv"))
            if len(images) != len(tables):
                raise MultiboxError(
                    f"{ann_dir}: {len(tables)} CSV files for {len(images)} images in {png_dir.name} "
                    "(paired by sorted order)"
                )
            for image, table in zip(images, tables, strict=True):
                file = inside_root(root, image.relative_to(root), png_dir)
                boxes, raw = _read_csv(table, min_area, min_side, max_distance, ignored)
                known = np.array([c in label_of for c in raw.tolist()], bool)
                unmapped += int((~known).sum())
                boxes, labels = (
                    boxes[known][:max_boxes],
                    np.array([label_of[c] for c in raw[known].tolist()], np.int64)[:max_boxes],
                )
                width, height = image_size(file, table)
                records.append(
                    ImageRecord(len(records) + 1, file, width, height, boxes, labels, np.zeros(len(labels), bool))
                )
    if not records:
        raise MultiboxError(f"{root}: no Cognata images found (<recording>/<camera>_png/*.png)")
    if unmapped:
        warnings.warn(f"{root}: dropped {unmapped} boxes of classes outside the 14-class label map", stacklevel=2)
    return with_ids(records, list(LABEL_MAP.values()))


def _read_csv(
    path: Path, min_area: float, min_side: float, max_distance: float, ignored: set[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Filtered xyxy boxes and raw class ids of one frame."""
    boxes, classes = [], []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None) or []
        col = csv_columns(header, COLUMNS, (), path)
        for number, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise MultiboxError(f"{path}:{number}: expected {len(header)} fields, got {len(row)}")
            text = row[col["bounding_box_2D"]].strip()
            try:
                if not (text.startswith("[") and text.endswith("]")):
                    raise ValueError
                box = [float(v) for v in text[1:-1].split(",")]
                cls, distance = int(row[col["object_class"]]), float(row[col["center_distance"]])
            except ValueError:
                raise MultiboxError(
                    f"{path}:{number}: expected bounding_box_2D '[x1, y1, x2, y2]', an integer object_class "
                    f"and a numeric center_distance"
                ) from None
            if len(box) != 4:
                raise MultiboxError(f"{path}:{number}: bounding_box_2D must hold 4 numbers, got {text!r}")
            width, height = box[2] - box[0], box[3] - box[1]
            if cls in ignored or width * height < min_area or min(width, height) < min_side or distance > max_distance:
                continue
            boxes.append(box)
            classes.append(cls)
    return np.array(boxes, np.float32).reshape(-1, 4), np.array(classes, np.int64)
