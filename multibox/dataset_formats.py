"""The dataset formats multibox reads, the ones it writes, and what ``data.<split>.annotations`` names in each.

One table, so the config schema, the readers and writers (``multibox.data.formats``), the command line's choices and
the README agree; it imports nothing, so ``multibox --help`` stays instant. Adding a format is one entry here plus
its reader (and writer) in ``multibox/data/formats/``; ``tests/data/formats/test_format_table.py`` holds them equal.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetFormat:
    """What a format's ``annotations`` key holds, and whether multibox can write the format."""

    annotations: str
    split_suffix: str | None = None  # a bare word without this suffix names a split of the root, not a file
    writable: bool = True


FORMATS: dict[str, DatasetFormat] = {
    "coco": DatasetFormat("instances JSON"),
    "voc": DatasetFormat("split name (trainval) or split .txt file; none: every XML", split_suffix=".txt"),
    "yolo": DatasetFormat("labels folder (none: labels/ beside images/), or the split of a data.yaml"),
    "txt": DatasetFormat("the list file (one image and its boxes a line)"),
    "openimages": DatasetFormat("split name (train, validation, test) or its bbox CSV", split_suffix=".csv"),
    "cognata": DatasetFormat("unused: the folder layout says where the labels are", writable=False),
}
FORMAT_NAMES = tuple(FORMATS)
WRITABLE_FORMATS = tuple(name for name, spec in FORMATS.items() if spec.writable)


def annotations_help() -> str:
    """One line per format, for the config schema's description of ``annotations``."""
    return "; ".join(f"{name}: {spec.annotations}" for name, spec in FORMATS.items())
