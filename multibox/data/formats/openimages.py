"""Open Images boxes (pytorch-ssd's download layout).

`<root>/sub-<split>-annotations-bbox.csv` (ImageID, LabelName, XMin, XMax, YMin, YMax
normalised, IsGroupOf, ...; other columns ignored), `<root>/class-descriptions-bbox.csv`
(LabelName,DisplayName; header optional, as the official file has none) and images
`<root>/<split>/<ImageID>.jpg` (or `<root>/<ImageID>.jpg`). IsGroupOf boxes become
`iscrowd` (ignored by training and by COCO evaluation).

Classes: `classes` (display names, in that order) restricts the set, and images with no box
of those classes are left out; by default every class with a box, in the order of the
descriptions file. Category ids become 1..K (the writer invents LabelNames `/multibox/<id>`).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from multibox.data.formats.common import (
    IMAGE_EXTENSIONS,
    csv_columns,
    image_size,
    inside_root,
    output_names,
    place_image,
    prepare_output,
    with_ids,
)
from multibox.data.records import DetectionSet, ImageRecord
from multibox.errors import MultiboxError

DESCRIPTIONS = "class-descriptions-bbox.csv"
COLUMNS = ("ImageID", "LabelName", "XMin", "XMax", "YMin", "YMax")
SPLITS = ("train", "validation", "test")
TOLERANCE = 1e-3  # float rounding of other tools; such boxes are clipped to [0, 1]


def load_openimages(root: Path, split: str | Path = "train", classes: Sequence[str] | None = None) -> DetectionSet:
    """Read one split: `split` is train/validation/test or the path of a `*-annotations-bbox.csv`."""
    root = Path(root)
    csv_path = Path(split)
    if csv_path.suffix.lower() == ".csv":
        split_name = csv_path.name.removeprefix("sub-").split("-annotations")[0]
    else:
        split_name, csv_path = str(split), root / f"sub-{split}-annotations-bbox.csv"
    if not csv_path.is_file():
        raise MultiboxError(f"{csv_path}: Open Images annotation file not found (split {split_name!r})")
    descriptions = _descriptions(
        next((p for p in (csv_path.parent / DESCRIPTIONS, root / DESCRIPTIONS) if p.is_file()), root / DESCRIPTIONS)
    )
    rows = _rows(csv_path, descriptions)
    present = {label for _, label, _, _ in rows}
    if classes is None:
        names = [name for label, name in descriptions.items() if label in present]
    else:
        known = set(descriptions.values())
        for name in classes:
            if name not in known:
                raise MultiboxError(f"data.classes: {name!r} is not a class of {csv_path.parent / DESCRIPTIONS}")
        names = list(dict.fromkeys(classes))
    label_of = {label: names.index(name) + 1 for label, name in descriptions.items() if name in names}
    image_dir = root / split_name if (root / split_name).is_dir() else root
    per_image: dict[str, list[tuple[int, list[float], bool]]] = {}
    for image_id, label, box, group in rows:
        if label in label_of:
            per_image.setdefault(image_id, []).append((label_of[label], box, group))
    records: list[ImageRecord] = []
    for image_id, objects in per_image.items():
        file = _image_file(image_dir, image_id, csv_path)
        width, height = image_size(file, csv_path)
        boxes = np.array([box for _, box, _ in objects], np.float32) * np.array(
            [width, height, width, height], np.float32
        )
        records.append(
            ImageRecord(
                len(records) + 1,
                file,
                width,
                height,
                boxes,
                np.array([lab for lab, _, _ in objects], np.int64),
                np.array([g for _, _, g in objects], bool),
            )
        )
    return with_ids(records, names)


def _image_file(image_dir: Path, image_id: str, source: Path) -> Path:
    for extension in IMAGE_EXTENSIONS:
        path = inside_root(image_dir, f"{image_id}{extension}", source)
        if path.is_file():
            return path
    return inside_root(image_dir, f"{image_id}.jpg", source)


def _descriptions(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise MultiboxError(f"{path}: Open Images class descriptions not found")
    names: dict[str, str] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        for number, row in enumerate(csv.reader(handle), start=1):
            if not row or (number == 1 and row[:2] == ["LabelName", "DisplayName"]):
                continue
            if len(row) != 2 or not row[0] or not row[1]:
                raise MultiboxError(f"{path}:{number}: expected 'LabelName,DisplayName', got {','.join(row)!r}")
            names[row[0]] = row[1]
    return names


def _rows(path: Path, descriptions: dict[str, str]) -> list[tuple[str, str, list[float], bool]]:
    rows = []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None) or []
        index = csv_columns(header, COLUMNS, ("IsGroupOf",), path)
        for number, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise MultiboxError(f"{path}:{number}: expected {len(header)} fields, got {len(row)}")
            try:
                x1, x2, y1, y2 = (float(row[index[c]]) for c in ("XMin", "XMax", "YMin", "YMax"))
                group = int(row[index["IsGroupOf"]]) if "IsGroupOf" in index else 0
            except ValueError:
                raise MultiboxError(
                    f"{path}:{number}: XMin/XMax/YMin/YMax must be numbers and IsGroupOf 0/1/-1"
                ) from None
            if not (-TOLERANCE <= x1 <= x2 <= 1 + TOLERANCE and -TOLERANCE <= y1 <= y2 <= 1 + TOLERANCE):
                raise MultiboxError(
                    f"{path}:{number}: box must be normalised to [0, 1] with XMin <= XMax and YMin <= YMax"
                )
            x1, x2, y1, y2 = (min(max(v, 0.0), 1.0) for v in (x1, x2, y1, y2))
            label = row[index["LabelName"]]
            if label not in descriptions:
                raise MultiboxError(f"{path}:{number}: LabelName {label!r} is not in {DESCRIPTIONS}")
            rows.append((row[index["ImageID"]], label, [x1, y1, x2, y2], group == 1))
    return rows


def write_openimages(dataset: DetectionSet, out_dir: Path, split: str = "train") -> None:
    """Write `sub-<split>-annotations-bbox.csv`, `class-descriptions-bbox.csv` and `<split>/<image>`.

    Images without boxes are lost: the format lists images only through their boxes.
    """
    out_dir = prepare_output(out_dir)
    labels = [f"/multibox/{c}" for c in dataset.category_ids]
    with (out_dir / DESCRIPTIONS).open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("LabelName", "DisplayName"), *zip(labels, dataset.class_names, strict=True)])
    with (out_dir / f"sub-{split}-annotations-bbox.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ImageID", "Source", "LabelName", "Confidence", "XMin", "XMax", "YMin", "YMax", "IsGroupOf"])
        for record, name in zip(dataset.records, output_names(dataset), strict=True):
            place_image(record.file, out_dir / split / name)
            scale = np.array([record.width, record.height, record.width, record.height], np.float64)
            for box, label, crowd in zip(
                (record.boxes / scale).tolist(), record.labels.tolist(), record.iscrowd.tolist(), strict=True
            ):
                writer.writerow(
                    [
                        Path(name).stem,
                        "multibox",
                        labels[label - 1],
                        1,
                        *(f"{v:.10g}" for v in (box[0], box[2], box[1], box[3])),
                        int(crowd),
                    ]
                )
