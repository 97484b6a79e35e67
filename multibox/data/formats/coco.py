"""COCO writer (the reader is :func:`multibox.data.coco.load_coco`): `images/` + `annotations.json`.

Lossless: category ids, names, image ids, float boxes, areas and iscrowd are all kept.
"""

from __future__ import annotations

import json
from pathlib import Path

from multibox.data.coco import load_coco
from multibox.data.formats.common import output_names, place_image, prepare_output
from multibox.data.records import DetectionSet

__all__ = ["load_coco", "write_coco"]


def write_coco(dataset: DetectionSet, out_dir: Path) -> None:
    out_dir = prepare_output(out_dir)
    names = output_names(dataset)
    gt = dataset.to_coco_gt()
    for image, record, name in zip(gt["images"], dataset.records, names, strict=True):
        image["file_name"] = name
        place_image(record.file, out_dir / "images" / name)
    (out_dir / "annotations.json").write_text(json.dumps(gt), encoding="utf-8")
