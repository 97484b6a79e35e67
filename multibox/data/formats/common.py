"""Helpers shared by the dataset-format readers and writers.

Image sizes come from the file header (PIL opens lazily: no pixel decoding). Every image
path a format names is checked to stay inside the dataset root, and writers only ever
create a new layout next to the source (hard links, or copies across file systems).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import yaml

from multibox.data.records import DetectionSet, ImageRecord
from multibox.errors import MultiboxError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def image_size(path: Path, source: Path | str) -> tuple[int, int]:
    """(width, height) of an image as displayed, from its header (an EXIF orientation of 5-8 swaps
    them, as `read_image` rotates such images); `source` is the annotation that names it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            width, height = image.size
            if image.format == "JPEG" and image.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                width, height = height, width
    except FileNotFoundError:
        raise MultiboxError(f"{source}: image {path} not found") from None
    except (UnidentifiedImageError, OSError) as error:
        raise MultiboxError(f"{source}: image {path} is unreadable: {str(error).splitlines()[0]}") from None
    return int(width), int(height)


def inside_root(root: Path, relative: str | Path, source: Path | str) -> Path:
    """Absolute `root / relative`, refused when it leaves `root` ('..' or an absolute path).

    The check is lexical, as `data validate`'s: an annotation file must not reach files outside
    the dataset, but images that are symlinks into shared storage stay usable."""
    base = Path(os.path.normpath(Path(root).absolute()))
    text = str(relative).replace("\\", "/")
    path = Path(os.path.normpath(base / text))
    if os.path.isabs(text) or (path != base and base not in path.parents):
        raise MultiboxError(f"{source}: image path {str(relative)!r} is outside the dataset root {root} (refused)")
    return path


def read_class_names(spec: Sequence[str] | Path | str | None, what: str = "data.class_names") -> list[str] | None:
    """Class names from a list, a names file (one a line) or a YOLO data .yaml (`names:` list or {id: name})."""
    if spec is None:
        return None
    if not isinstance(spec, (str, Path)):  # a list or tuple of names
        names = [str(name) for name in spec]
    else:
        path = Path(spec)
        if not path.is_file():
            raise MultiboxError(f"{path}: class names file not found ({what})")
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() in (".yaml", ".yml"):
            try:
                raw = yaml.safe_load(text)
            except yaml.YAMLError as error:
                raise MultiboxError(f"{path}: invalid YAML: {str(error).splitlines()[0]}") from None
            names_raw = raw.get("names") if isinstance(raw, dict) else None
            if isinstance(names_raw, dict) and all(isinstance(k, int) for k in names_raw):
                if sorted(names_raw) != list(range(len(names_raw))):
                    raise MultiboxError(f"{path}: 'names' ids must be 0..{len(names_raw) - 1}")
                names = [str(names_raw[i]) for i in range(len(names_raw))]
            elif isinstance(names_raw, list):
                names = [str(name) for name in names_raw]
            else:
                raise MultiboxError(f"{path}: expected a 'names' list or {{id: name}} mapping")
        else:
            names = [line.strip() for line in text.splitlines() if line.strip()]
        what = str(path)
    if not names:
        raise MultiboxError(f"{what}: no class names")
    if len(set(names)) != len(names):
        duplicate = next(n for n in names if names.count(n) > 1)
        raise MultiboxError(f"{what}: class name {duplicate!r} appears more than once")
    return names


def prepare_output(out_dir: Path) -> Path:
    """Create `out_dir`; refuse one that exists and is not empty (writers never overwrite)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise MultiboxError(f"{out_dir}: already exists and is not empty; choose a new folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def output_names(dataset: DetectionSet) -> list[str]:
    """A unique flat file name per record: its own name, or `<image_id>_<name>` when names clash."""
    names = [record.file.name for record in dataset.records]
    if len(set(names)) == len(names) and len({Path(n).stem for n in names}) == len(names):
        return names
    return [f"{record.image_id}_{record.file.name}" for record in dataset.records]


def place_image(source: Path, target: Path) -> None:
    """Hard-link `source` at `target` (copy when linking is impossible); the source is never touched."""
    if not source.is_file():
        raise MultiboxError(f"{source}: image not found (while writing {target.parent})")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def with_ids(records: list[ImageRecord], class_names: list[str]) -> DetectionSet:
    """A DetectionSet of a format without category ids: ids 1..K."""
    return DetectionSet(
        records=records, class_names=list(class_names), category_ids=list(range(1, len(class_names) + 1))
    )


def drop_crowd_warning(dataset: DetectionSet, fmt: str, out_dir: Path) -> None:
    import warnings

    crowd = sum(int(r.iscrowd.sum()) for r in dataset.records)
    if crowd:
        warnings.warn(f"{out_dir}: {fmt} has no crowd/difficult flag: {crowd} crowd boxes left out", stacklevel=3)


def csv_columns(header: list[str], required: Sequence[str], optional: Sequence[str], path: Path) -> dict[str, int]:
    """Column positions by name; a missing required column is a one-line error naming the file."""
    missing = [c for c in required if c not in header]
    if missing:
        raise MultiboxError(f"{path}: missing column(s) {', '.join(missing)} in the header")
    return {c: header.index(c) for c in (*required, *optional) if c in header}
