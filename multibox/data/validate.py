"""Check a COCO dataset thoroughly, collecting every problem instead of stopping at the first.

Unlike :func:`multibox.data.formats.coco.load_coco` (strict: one error and it stops), validation reads
the raw JSON itself, decodes every image fully (in a thread pool: decoding is I/O bound and
OpenCV releases the GIL) and reports each problem as a :class:`Problem`. :func:`fix_coco`
writes a cleaned copy (images hard-linked or copied) and never touches the original.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from multibox.data.dataset import truncation
from multibox.data.formats.coco import read_coco_json
from multibox.errors import MultiboxError

BOUNDS_TOLERANCE = 0.01  # pixels a box may stick out of its image before it is "outside" (float rounding)

# Problem kinds. Image-level kinds make the image (and its annotations) unusable.
MISSING_IMAGE = "missing-image"
CORRUPT_IMAGE = "corrupt-image"
SIZE_MISMATCH = "size-mismatch"
UNSAFE_FILE_NAME = "unsafe-file-name"
DUPLICATE_IMAGE_ID = "duplicate-image-id"
INVALID_IMAGE = "invalid-image-entry"
DUPLICATE_FILE = "duplicate-file-name"
INVALID_ANNOTATION = "invalid-annotation"
DUPLICATE_ANNOTATION_ID = "duplicate-annotation-id"
UNKNOWN_IMAGE_ID = "unknown-image-id"
UNKNOWN_CATEGORY = "unknown-category"
EMPTY_BOX = "empty-box"
BOX_OUTSIDE = "box-outside"
INVALID_CATEGORY = "invalid-category"
DUPLICATE_CATEGORY_ID = "duplicate-category-id"


@dataclass(frozen=True)
class Problem:
    kind: str  # one of the kinds above
    where: str  # the file, or "image 3" / "annotation 17" / "categories[2]"
    detail: str
    severity: str = "error"  # "error" or "warning"


@dataclass
class ValidationReport:
    images_dir: str
    annotation_file: str
    num_images: int = 0
    num_annotations: int = 0
    num_categories: int = 0
    images_decoded: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def counts(self) -> dict[str, int]:
        """Problems per kind."""
        return dict(sorted(Counter(p.kind for p in self.problems).items()))

    def to_dict(self) -> dict[str, Any]:
        return {
            "images_dir": self.images_dir,
            "annotation_file": self.annotation_file,
            "num_images": self.num_images,
            "num_annotations": self.num_annotations,
            "num_categories": self.num_categories,
            "images_decoded": self.images_decoded,
            "ok": self.ok,
            "counts": self.counts(),
            "problems": [asdict(p) for p in self.problems],
        }


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def read_annotation_json(annotation_file: Path) -> dict[str, Any]:
    """The raw COCO dict; only an unreadable file or a non-COCO top level is fatal (MultiboxError)."""
    return read_coco_json(Path(annotation_file))


def _inside(images_root: Path, file_name: str) -> Path | None:
    """images_root / file_name when it stays inside images_root, else None."""
    if not file_name or os.path.isabs(file_name) or file_name.startswith(("/", "\\")):
        return None
    path = Path(os.path.normpath(images_root / file_name.replace("\\", "/")))  # lexical: symlinked images stay fine
    try:
        path.relative_to(images_root)
    except ValueError:
        return None
    return path


def check_image_file(path: Path, width: int | None = None, height: int | None = None) -> tuple[str, str] | None:
    """(kind, detail) of what is wrong with an image file, or None when it decodes fully at the given size."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return MISSING_IMAGE, "file not found"
    except OSError as error:
        return CORRUPT_IMAGE, f"cannot read: {error.strerror or error}"
    if not data:
        return CORRUPT_IMAGE, "empty file"
    truncated = truncation(data)
    if truncated:
        return CORRUPT_IMAGE, truncated
    image = cv2.imdecode(
        np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR
    )  # EXIF orientation applied, as training reads it
    if image is None:
        return CORRUPT_IMAGE, "cannot decode (corrupt or not an image)"
    h, w = image.shape[:2]
    if width is not None and height is not None and (w, h) != (width, height):
        # Annotations on the stored, unrotated pixels are fine: training then reads those (see read_image).
        stored = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        if stored is None or stored.shape[:2] != (height, width):
            return SIZE_MISMATCH, f"image is {w}x{h} but its annotation says {width}x{height}"
    return None


@dataclass
class _Image:
    index: int
    image_id: int
    file_name: str
    width: int
    height: int
    path: Path | None  # None: unsafe name
    usable: bool = True  # False: an image-level problem (its annotations are dropped by a fix)


def validate_coco(
    images_dir: Path,
    annotation_file: Path,
    workers: int = 8,
    progress: Callable[[int, int], None] | bool = False,
) -> ValidationReport:
    """Every problem of a COCO dataset (see the kinds above).

    `progress`: True for a rich progress bar (stderr), or a callback(done, total) per decoded image.
    """
    report, _, _, _ = _validate(Path(images_dir), Path(annotation_file), workers, progress)
    return report


def _validate(
    images_dir: Path, annotation_file: Path, workers: int, progress: Callable[[int, int], None] | bool
) -> tuple[ValidationReport, dict[str, Any], list[_Image], dict[int, tuple[str, Any]]]:
    """The report, the raw dict, the parsed images and per annotation index: ("drop"|"clip"|"keep", box)."""
    raw = read_annotation_json(annotation_file)
    if not images_dir.is_dir():
        raise MultiboxError(f"{images_dir}: images folder not found (images of {annotation_file})")
    report = ValidationReport(
        str(images_dir), str(annotation_file), len(raw["images"]), len(raw["annotations"]), len(raw["categories"])
    )
    add = lambda kind, where, detail: report.problems.append(Problem(kind, str(where), detail))  # noqa: E731

    categories: set[int] = set()
    for i, category in enumerate(raw["categories"]):
        if not isinstance(category, dict) or not _int(category.get("id")) or not isinstance(category.get("name"), str):
            add(INVALID_CATEGORY, f"categories[{i}]", "needs an integer 'id' and a string 'name'")
        elif category["id"] in categories:
            add(DUPLICATE_CATEGORY_ID, f"categories[{i}]", f"category id {category['id']} appears more than once")
        else:
            categories.add(category["id"])
    if not raw["categories"]:
        add(INVALID_CATEGORY, "categories", "'categories' is empty")

    root = Path(os.path.normpath(images_dir.absolute()))
    images: list[_Image] = []
    by_id: dict[int, _Image] = {}
    files: dict[str, int] = {}
    for i, entry in enumerate(raw["images"]):
        fields_ok = (
            isinstance(entry, dict)
            and _int(entry.get("id"))
            and isinstance(entry.get("file_name"), str)
            and _int(entry.get("width"))
            and _int(entry.get("height"))
        )
        if not fields_ok:
            add(INVALID_IMAGE, f"images[{i}]", "needs integer 'id', 'width', 'height' and a string 'file_name'")
            continue
        image = _Image(
            i, entry["id"], entry["file_name"], entry["width"], entry["height"], _inside(root, entry["file_name"])
        )
        images.append(image)
        if image.width <= 0 or image.height <= 0:
            add(INVALID_IMAGE, image.file_name, f"image {image.image_id}: width and height must be positive")
            image.usable = False
        if image.image_id in by_id:
            add(
                DUPLICATE_IMAGE_ID,
                image.file_name,
                f"image id {image.image_id} is also {by_id[image.image_id].file_name}",
            )
            image.usable = False
        else:
            by_id[image.image_id] = image
        if image.path is None:
            add(UNSAFE_FILE_NAME, image.file_name, "file name escapes the images folder (absolute or '..')")
            image.usable = False
        elif str(image.path) in files:
            add(
                DUPLICATE_FILE,
                image.file_name,
                f"image {image.image_id} uses the same file as image {files[str(image.path)]}",
            )
            image.usable = False
        else:
            files[str(image.path)] = image.image_id

    _decode_all(images, report, workers, progress)

    actions: dict[int, tuple[str, Any]] = {}
    annotation_ids: set[int] = set()
    for i, ann in enumerate(raw["annotations"]):
        has_id = isinstance(ann, dict) and _int(ann.get("id"))
        where = f"annotation {ann['id']}" if has_id else f"annotations[{i}]"
        if not isinstance(ann, dict) or not _int(ann.get("image_id")) or not _int(ann.get("category_id")):
            add(INVALID_ANNOTATION, where, "needs integer 'image_id' and 'category_id'")
            actions[i] = ("drop", None)
            continue
        if not has_id:
            add(INVALID_ANNOTATION, where, "has no integer 'id'")
        elif ann["id"] in annotation_ids:
            add(DUPLICATE_ANNOTATION_ID, where, f"annotation id {ann['id']} appears more than once")
        else:
            annotation_ids.add(ann["id"])
        found = by_id.get(ann["image_id"])
        if found is None:
            add(UNKNOWN_IMAGE_ID, where, f"refers to image id {ann['image_id']}, which is not in 'images'")
            actions[i] = ("drop", None)
            continue
        image = found
        if ann["category_id"] not in categories:
            add(
                UNKNOWN_CATEGORY,
                where,
                f"category id {ann['category_id']} is not in 'categories' (image {image.file_name})",
            )
            actions[i] = ("drop", None)
            continue
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(_number(v) for v in bbox):
            add(INVALID_ANNOTATION, where, f"'bbox' must be 4 finite numbers [x, y, width, height], got {bbox!r}")
            actions[i] = ("drop", None)
            continue
        x, y, w, h = (float(v) for v in bbox)
        if w <= 0 or h <= 0:
            add(EMPTY_BOX, where, f"box {bbox} has zero or negative width/height (image {image.file_name})")
            actions[i] = ("drop", None)
            continue
        actions[i] = ("keep", [x, y, w, h])
        if image.width > 0 and image.height > 0:
            tol = BOUNDS_TOLERANCE
            if x < -tol or y < -tol or x + w > image.width + tol or y + h > image.height + tol:
                x0, y0 = max(x, 0.0), max(y, 0.0)
                x1, y1 = min(x + w, float(image.width)), min(y + h, float(image.height))
                clipped = x1 > x0 and y1 > y0
                add(
                    BOX_OUTSIDE,
                    where,
                    f"box {bbox} (xywh) is outside the {image.width}x{image.height} image "
                    f"{image.file_name}" + ("" if clipped else " entirely"),
                )
                actions[i] = ("clip", [x0, y0, x1 - x0, y1 - y0]) if clipped else ("drop", None)
    return report, raw, images, actions


def _decode_all(
    images: list[_Image], report: ValidationReport, workers: int, progress: Callable[[int, int], None] | bool
) -> None:
    todo = [image for image in images if image.path is not None]
    check = lambda image: check_image_file(image.path, image.width, image.height)  # noqa: E731
    bar = None
    if progress is True:
        from rich.console import Console
        from rich.progress import Progress

        console = Console(stderr=True)
        if console.is_terminal:
            bar = Progress(console=console, transient=True)
            task = bar.add_task("decoding images", total=len(todo))
            bar.start()
    try:
        with ThreadPoolExecutor(max_workers=max(1, int(workers))) as pool:
            for done, (image, result) in enumerate(zip(todo, pool.map(check, todo), strict=True), start=1):
                report.images_decoded += result is None  # decoded = read and decoded without a problem
                if result is not None:
                    kind, detail = result
                    report.problems.append(Problem(kind, image.file_name, f"image {image.image_id}: {detail}"))
                    image.usable = False
                if bar is not None:
                    bar.advance(task)
                elif callable(progress):
                    progress(done, len(todo))
    finally:
        if bar is not None:
            bar.stop()


def fix_coco(
    images_dir: Path,
    annotation_file: Path,
    out_dir: Path,
    workers: int = 8,
    progress: Callable[[int, int], None] | bool = False,
    link: bool = True,
) -> dict[str, Any]:
    """Write a cleaned copy of a COCO dataset to `out_dir/images` + `out_dir/annotations.json`.

    Bad images (missing, corrupt, wrong size, unsafe name, duplicate id or file) are dropped with their
    annotations; so are annotations with an unknown image or category, an invalid, empty or entirely
    outside box. Boxes partly outside are clipped; duplicate annotation ids get fresh ids. Images are
    hard-linked (`link`) or copied. `out_dir` must not exist or be empty. Returns the report of the
    original and counts of what was kept, dropped and clipped.
    """
    images_dir, annotation_file, out_dir = Path(images_dir), Path(annotation_file), Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise MultiboxError(f"{out_dir}: --fix output must not exist or be empty")
    if out_dir.resolve() == images_dir.resolve() or images_dir.resolve() in out_dir.resolve().parents:
        raise MultiboxError(f"{out_dir}: --fix output must be outside the images folder {images_dir}")
    report, raw, images, actions = _validate(images_dir, annotation_file, workers, progress)

    valid_categories, categories = set(), []
    for category in raw["categories"]:
        if (
            isinstance(category, dict)
            and _int(category.get("id"))
            and isinstance(category.get("name"), str)
            and category["id"] not in valid_categories
        ):
            valid_categories.add(category["id"])
            categories.append(category)
    kept_images = [image for image in images if image.usable]
    kept_ids = {image.image_id for image in kept_images}
    out_images = out_dir / "images"
    out_images.mkdir(parents=True, exist_ok=True)
    for image in kept_images:
        target = out_images / image.file_name
        target.parent.mkdir(parents=True, exist_ok=True)
        assert image.path is not None  # an image without a safe path is not usable
        try:
            if not link:
                raise OSError
            os.link(image.path, target)
        except OSError:
            shutil.copy2(image.path, target)

    annotations, used_ids, clipped = [], set(), 0
    valid_ids = [a["id"] for a in raw["annotations"] if isinstance(a, dict) and _int(a.get("id"))]
    next_id = max(valid_ids, default=0) + 1
    for i, ann in enumerate(raw["annotations"]):
        action, box = actions.get(i, ("drop", None))
        if action == "drop" or ann["image_id"] not in kept_ids:
            continue
        ann = dict(ann)
        if action == "clip":
            ann["bbox"], clipped = box, clipped + 1
            ann["area"] = float(box[2] * box[3])
            ann.pop("segmentation", None)  # no longer matches the clipped box
        if not _int(ann.get("id")) or ann["id"] in used_ids:
            ann["id"], next_id = next_id, next_id + 1
        used_ids.add(ann["id"])
        annotations.append(ann)
    fixed = {key: value for key, value in raw.items() if key not in ("images", "annotations", "categories")}
    fixed.update(
        images=[raw["images"][image.index] for image in kept_images], annotations=annotations, categories=categories
    )
    (out_dir / "annotations.json").write_text(json.dumps(fixed), encoding="utf-8")
    return {
        "report": report,
        "out_dir": str(out_dir),
        "images_kept": len(kept_images),
        "images_dropped": report.num_images - len(kept_images),
        "annotations_kept": len(annotations),
        "annotations_dropped": report.num_annotations - len(annotations),
        "boxes_clipped": clipped,
    }
