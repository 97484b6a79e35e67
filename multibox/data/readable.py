"""The bound on unreadable images: a split that is mostly missing must stop the run, not train on what is left.

A single bad file is skipped with a warning (see DetectionDataset's ``skip_bad``), but when most images of a
split are missing (a wrong images folder, a moved dataset) the run would otherwise train an untrained model to
the end and report it with exit status 0. ``data.max_skipped_fraction`` (default 0.5) is the bound.
"""

from __future__ import annotations

import os
from pathlib import Path

from multibox.data.records import DetectionSet
from multibox.errors import MultiboxError

OVERRIDE_KEY = "data.max_skipped_fraction"


def missing_files(dataset: DetectionSet) -> list[Path]:
    """Images that are not there or empty: one stat per file, cheap next to decoding (done before training)."""
    missing = []
    for record in dataset.records:
        try:
            if os.stat(record.file).st_size == 0:
                missing.append(Path(record.file))
        except OSError:
            missing.append(Path(record.file))
    return missing


def check_skipped(
    skipped: int,
    total: int,
    split: str,
    source: str,
    max_fraction: float,
    first: str | None = None,
    why: str = "missing or unreadable",
) -> None:
    """MultiboxError when no image of the split is left, or more than `max_fraction` of them were skipped.

    `split` is "training" or "validation", `source` the annotation file (or images folder) named in the message.
    """
    if total <= 0 or skipped <= 0:
        return
    example = f"; first: {first}" if first else ""
    if skipped >= total:
        raise MultiboxError(f"{source}: no readable {split} images ({skipped} of {total} skipped, {why}{example})")
    if skipped / total > max_fraction:
        raise MultiboxError(
            f"{source}: {skipped} of {total} {split} images are {why} ({100 * skipped / total:.0f} % > "
            f"{100 * max_fraction:.0f} %{example}); set {OVERRIDE_KEY}=1 to train on the rest"
        )


def check_files_present(dataset: DetectionSet, split: str, source: str, max_fraction: float) -> None:
    """Before training: stop when a split's image files are mostly absent (see :func:`check_skipped`)."""
    missing = missing_files(dataset)
    check_skipped(
        len(missing),
        len(dataset),
        split,
        source,
        max_fraction,
        first=str(missing[0]) if missing else None,
        why="missing or empty",
    )
