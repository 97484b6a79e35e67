"""Pascal VOC: `Annotations/<id>.xml`, `JPEGImages/<file>`, `ImageSets/Main/<split>.txt`.

Coordinates: VOC stores 1-based inclusive pixel indices, so a box covering the whole image
is (1, 1, W, H). Like Detectron2's `pascal_voc` loader (and the VOC devkit's own reading),
we subtract 1 from xmin and ymin only, giving 0-based xyxy pixel *edges* (0, 0, W, H); the
writer adds the 1 back. (torchvision's VOCDetection returns the raw numbers; pytorch-ssd
subtracts 1 from all four.) The writer rounds to integers, as VOC files hold integers.

`difficult` objects become `iscrowd` boxes: left out of training (DetectionDataset drops
crowd boxes) but kept for evaluation, where COCOeval ignores them (no penalty for missing
them, no credit for finding them) — the same role they have in the VOC metric. The writer
writes crowd boxes back as `difficult=1`.

Class names: `class_names` given, else `<root>/labels.txt` (pytorch-ssd's convention, which
the writer emits), else the sorted names found in the XMLs.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

from multibox.data.formats.common import (
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


def load_voc(
    root: Path, split: str | Path | None = None, class_names: Sequence[str] | Path | str | None = None
) -> DetectionSet:
    """Read a VOC root; `split` is a split name (ImageSets/Main/<split>.txt), a split file, or None for every XML."""
    root = Path(root)
    if not (root / "Annotations").is_dir():
        raise MultiboxError(f"{root}: not a VOC root (no Annotations folder)")
    ids, split_file = _split_ids(root, split)
    parsed = [_parse_xml(root, image_id, split_file) for image_id in ids]
    names = read_class_names(class_names)
    if names is None and (root / "labels.txt").is_file():
        names = read_class_names(root / "labels.txt")
    if names is None:
        names = sorted({obj[0] for _, _, _, objects in parsed for obj in objects})
        if not names:
            raise MultiboxError(f"{root}: no objects in the XMLs and no class names given (data.class_names)")
    label_of = {name: i for i, name in enumerate(names, start=1)}
    records = []
    for index, (xml_path, file, size, objects) in enumerate(parsed):
        for name, *_ in objects:
            if name not in label_of:
                raise MultiboxError(f"{xml_path}: object class {name!r} is not in the class names")
        width, height = size if size is not None else image_size(file, xml_path)
        boxes = np.array([obj[1] for obj in objects], np.float32).reshape(-1, 4)
        boxes[:, :2] -= 1.0
        records.append(
            ImageRecord(
                index + 1,
                file,
                width,
                height,
                boxes,
                np.array([label_of[obj[0]] for obj in objects], np.int64),
                np.array([obj[2] for obj in objects], bool),
            )
        )
    return with_ids(records, names)


def _split_ids(root: Path, split: str | Path | None) -> tuple[list[str], Path]:
    if split is None:
        return sorted(p.stem for p in (root / "Annotations").glob("*.xml")), root / "Annotations"
    path = Path(split)
    if not path.is_file():
        # A split name: config loading has made it absolute against the working directory (resolve_paths), so its
        # last part is the name (data.val.annotations: test -> <root>/ImageSets/Main/test.txt).
        name = path.name
        path = root / "ImageSets" / "Main" / f"{name}.txt"
        if not path.is_file():
            raise MultiboxError(f"{path}: VOC split file not found (split {name!r})")
    ids = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) > 2 or (len(fields) == 2 and fields[1] not in ("1", "0", "-1")):
            raise MultiboxError(
                f"{path}:{number}: expected an image id (optionally followed by 1/0/-1), got {line.strip()!r}"
            )
        if len(fields) == 2 and fields[1] == "-1":
            continue
        ids.append(fields[0])
    return ids, path


def _parse_xml(root: Path, image_id: str, split_file: Path) -> tuple[Path, Path, tuple[int, int] | None, list]:
    xml_path = inside_root(root, Path("Annotations") / f"{image_id}.xml", split_file)
    if not xml_path.is_file():
        raise MultiboxError(f"{split_file}: annotation {xml_path} not found")
    try:
        tree = ET.parse(xml_path).getroot()
    except ET.ParseError as error:
        raise MultiboxError(f"{xml_path}: invalid XML: {error}") from None
    file_name = (tree.findtext("filename") or "").strip() or f"{image_id}.jpg"
    file = inside_root(root, Path("JPEGImages") / file_name, xml_path)
    size = None
    size_node = tree.find("size")
    if size_node is not None:
        width, height = _number(size_node, "width", xml_path, "size"), _number(size_node, "height", xml_path, "size")
        if width > 0 and height > 0:
            size = (int(width), int(height))
    objects = []
    for i, obj in enumerate(tree.findall("object")):
        where = f"object {i + 1}"
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise MultiboxError(f"{xml_path}: {where} has no <name>")
        box_node = obj.find("bndbox")
        if box_node is None:
            raise MultiboxError(f"{xml_path}: {where} ({name}) has no <bndbox>")
        box = [_number(box_node, key, xml_path, where) for key in ("xmin", "ymin", "xmax", "ymax")]
        if box[2] < box[0] or box[3] < box[1]:
            raise MultiboxError(f"{xml_path}: {where} ({name}): xmax/ymax smaller than xmin/ymin {box}")
        difficult = (obj.findtext("difficult") or "0").strip()
        if difficult not in ("0", "1"):
            raise MultiboxError(f"{xml_path}: {where} ({name}): <difficult> must be 0 or 1, got {difficult!r}")
        objects.append((name, box, difficult == "1"))
    return xml_path, file, size, objects


def _number(node: ET.Element, key: str, path: Path, where: str) -> float:
    text = node.findtext(key)
    try:
        return float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise MultiboxError(f"{path}: {where}: <{key}> must be a number, got {text!r}") from None


def write_voc(dataset: DetectionSet, out_dir: Path, split: str = "trainval") -> None:
    """Write a VOC root (Annotations, JPEGImages, ImageSets/Main/<split>.txt, labels.txt)."""
    out_dir = prepare_output(out_dir)
    (out_dir / "Annotations").mkdir()
    (out_dir / "ImageSets" / "Main").mkdir(parents=True)
    names = output_names(dataset)
    for record, name in zip(dataset.records, names, strict=True):
        place_image(record.file, out_dir / "JPEGImages" / name)
        (out_dir / "Annotations" / f"{Path(name).stem}.xml").write_text(
            _xml(record, name, dataset.class_names), encoding="utf-8"
        )
    (out_dir / "ImageSets" / "Main" / f"{split}.txt").write_text(
        "".join(f"{Path(n).stem}\n" for n in names), encoding="utf-8"
    )
    (out_dir / "labels.txt").write_text("".join(f"{n}\n" for n in dataset.class_names), encoding="utf-8")


def _xml(record: ImageRecord, file_name: str, class_names: list[str]) -> str:
    lines = [
        "<annotation>",
        "  <folder>JPEGImages</folder>",
        f"  <filename>{escape(file_name)}</filename>",
        f"  <size><width>{record.width}</width><height>{record.height}</height><depth>3</depth></size>",
    ]
    for box, label, crowd in zip(record.boxes.tolist(), record.labels.tolist(), record.iscrowd.tolist(), strict=True):
        x1, y1 = int(round(box[0])) + 1, int(round(box[1])) + 1
        x2, y2 = max(int(round(box[2])), x1), max(int(round(box[3])), y1)
        lines += [
            "  <object>",
            f"    <name>{escape(class_names[label - 1])}</name>",
            "    <truncated>0</truncated>",
            f"    <difficult>{int(crowd)}</difficult>",
            f"    <bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox>",
            "  </object>",
        ]
    lines.append("</annotation>")
    return "\n".join(lines) + "\n"
