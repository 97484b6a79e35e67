"""COCO instances JSON: read into a :class:`DetectionSet` (`load_coco`) and written back (`write_coco`:
`images/` + `annotations.json`, lossless: category ids, names, image ids, float boxes, areas and iscrowd kept).

Category ids (which have gaps in COCO itself) become contiguous labels 1..K sorted by
id; the ids are kept so results can be reported in the dataset's own ids. Every problem
with the file is a one-line :class:`MultiboxError` naming it.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from multibox.data.formats.common import output_names, place_image, prepare_output
from multibox.data.records import DetectionSet, ImageRecord
from multibox.errors import MultiboxError


def load_coco(images_dir: Path, annotation_file: Path) -> DetectionSet:
    """Read a COCO instances file; image paths are `images_dir / file_name`, made absolute."""
    images_dir, annotation_file = Path(images_dir), Path(annotation_file)
    raw = read_coco_json(annotation_file)
    if not images_dir.is_dir():
        raise MultiboxError(f"{images_dir}: images folder not found (images of {annotation_file})")
    class_names, category_ids = _parse_categories(raw["categories"], annotation_file)
    images = _parse_images(raw["images"], annotation_file)
    image_index = {image["id"]: i for i, image in enumerate(images)}
    label_of = {cat_id: label for label, cat_id in enumerate(category_ids, start=1)}
    image_idx, labels, boxes, areas, crowd = _parse_annotations(
        raw["annotations"], image_index, label_of, annotation_file
    )

    # xywh -> xyxy; drop degenerate boxes (counted in one warning, not one per box).
    valid = (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
    if not valid.all():
        warnings.warn(
            f"{annotation_file}: dropped {int((~valid).sum())} boxes with zero or negative width/height", stacklevel=2
        )
    image_idx, labels, boxes, areas, crowd = (a[valid] for a in (image_idx, labels, boxes, areas, crowd))
    boxes[:, 2:] += boxes[:, :2]
    areas = np.where(np.isnan(areas), (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), areas)

    # Group annotations by image without a per-image scan: stable sort, then split at the counts.
    order = np.argsort(image_idx, kind="stable")
    bounds = np.cumsum(np.bincount(image_idx, minlength=len(images)))[:-1]
    groups = [np.split(a[order], bounds) for a in (boxes, labels, crowd, areas)]
    root = images_dir.absolute()
    records = [
        ImageRecord(
            image["id"],
            _image_path(root, image["file_name"], annotation_file),
            image["width"],
            image["height"],
            b,
            lab,
            c,
            ar,
        )
        # strict=False: with no images np.split still returns one (empty) part per array.
        for image, b, lab, c, ar in zip(images, *groups, strict=False)
    ]
    return DetectionSet(records=records, class_names=class_names, category_ids=category_ids)


def _image_path(root: Path, file_name: str, annotation_file: Path) -> Path:
    """root / file_name; a name that leaves the images folder ('..', absolute) is refused, so an
    annotation file can never make training read (or `data convert` copy) files outside the dataset."""
    if ".." not in file_name and not file_name.startswith(("/", "\\")) and ":" not in file_name:
        return root / file_name  # the common case, without normalising every path
    from multibox.data.formats.common import inside_root

    return inside_root(root, file_name, annotation_file)


def read_coco_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise MultiboxError(f"{path}: annotation file not found")
    try:
        with path.open("r", encoding="utf-8") as handle:
            raw = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise MultiboxError(f"{path}: invalid JSON: {str(error).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise MultiboxError(f"{path}: expected a COCO object with images, annotations and categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(raw.get(key), list):
            problem = "is missing" if key not in raw else "must be a list"
            raise MultiboxError(f"{path}: COCO key '{key}' {problem}")
    return raw


def _field(item: Any, key: str, kind: type | tuple[type, ...], where: str, path: Path) -> Any:
    """item[key] checked to be of `kind` (bool is never accepted as a number)."""
    if not isinstance(item, dict) or key not in item:
        raise MultiboxError(f"{path}: {where} has no '{key}'")
    value = item[key]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise MultiboxError(f"{path}: {where}: '{key}' has an invalid value {value!r}")
    return value


def _parse_categories(categories: list[Any], path: Path) -> tuple[list[str], list[int]]:
    if not categories:
        raise MultiboxError(f"{path}: 'categories' is empty")
    pairs = [
        (_field(c, "id", int, f"categories[{i}]", path), str(_field(c, "name", str, f"categories[{i}]", path)))
        for i, c in enumerate(categories)
    ]
    ids = [cat_id for cat_id, _ in pairs]
    if len(set(ids)) != len(ids):
        duplicate = next(cat_id for cat_id in ids if ids.count(cat_id) > 1)
        raise MultiboxError(f"{path}: category id {duplicate} appears more than once")
    pairs.sort()
    return [name for _, name in pairs], [cat_id for cat_id, _ in pairs]


def _parse_images(images: list[Any], path: Path) -> list[dict[str, Any]]:
    parsed = []
    for i, image in enumerate(images):
        where = f"images[{i}]"
        entry = {
            "id": _field(image, "id", int, where, path),
            "file_name": _field(image, "file_name", str, where, path),
            "width": _field(image, "width", int, where, path),
            "height": _field(image, "height", int, where, path),
        }
        if entry["width"] <= 0 or entry["height"] <= 0:
            raise MultiboxError(f"{path}: {where}: width and height must be positive")
        parsed.append(entry)
    ids = [entry["id"] for entry in parsed]
    if len(set(ids)) != len(ids):
        duplicate = next(image_id for image_id in ids if ids.count(image_id) > 1)
        raise MultiboxError(f"{path}: image id {duplicate} appears more than once")
    return parsed


def _parse_annotations(
    annotations: list[Any], image_index: dict[int, int], label_of: dict[int, int], path: Path
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Columns of all annotations: image index, label, xywh box, area (NaN if absent), crowd flag."""
    n = len(annotations)
    image_idx, labels = np.empty(n, np.int64), np.empty(n, np.int64)
    boxes, areas, crowd = np.empty((n, 4), np.float32), np.full(n, np.nan, np.float32), np.zeros(n, bool)
    for i, ann in enumerate(annotations):
        where = f"annotations[{i}]" + (f" (id {ann['id']})" if isinstance(ann, dict) and "id" in ann else "")
        image_id = _field(ann, "image_id", int, where, path)
        category_id = _field(ann, "category_id", int, where, path)
        bbox = _field(ann, "bbox", list, where, path)
        if image_id not in image_index:
            raise MultiboxError(f"{path}: {where} refers to unknown image id {image_id}")
        if category_id not in label_of:
            raise MultiboxError(f"{path}: {where} refers to unknown category id {category_id}")
        if len(bbox) != 4 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox):
            raise MultiboxError(f"{path}: {where}: 'bbox' must be 4 numbers [x, y, width, height]")
        image_idx[i], labels[i], boxes[i] = image_index[image_id], label_of[category_id], bbox
        area = ann.get("area")
        if isinstance(area, (int, float)) and not isinstance(area, bool):
            areas[i] = area
        crowd[i] = bool(ann.get("iscrowd", 0))
    return image_idx, labels, boxes, areas, crowd


def write_coco(dataset: DetectionSet, out_dir: Path) -> None:
    out_dir = prepare_output(out_dir)
    names = output_names(dataset)
    gt = dataset.to_coco_gt()
    for image, record, name in zip(gt["images"], dataset.records, names, strict=True):
        image["file_name"] = name
        place_image(record.file, out_dir / "images" / name)
    (out_dir / "annotations.json").write_text(json.dumps(gt), encoding="utf-8")
