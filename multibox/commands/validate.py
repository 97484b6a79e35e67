"""``multibox data validate``: check a dataset's annotations and images (any format), print the problems and
write a cleaned COCO copy with --fix."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from multibox.data.validate import fix_coco, validate_coco
from multibox.errors import MultiboxError
from multibox.reporting.validation import print_report


def validate_command(
    config_path: Path | None,
    overrides: list[str],
    images: Path | None,
    annotations: Path | None,
    data_format: str = "coco",
    fix: Path | None = None,
    workers: int = 8,
    max_rows: int = 50,
) -> int:
    """`multibox data validate`: 0 when clean, 1 when there are errors (with --fix: when the fixed copy has errors).

    COCO files are checked as written; other formats are read with their reader (whose structural
    errors stop with one line), then their images and boxes are checked the same way and --fix
    writes the cleaned copy as COCO."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="multibox-validate-") as scratch:
        return _validate_command(
            config_path, overrides, images, annotations, data_format, fix, workers, max_rows, Path(scratch)
        )


def _as_coco(data: Any, split: Any, name: str, scratch: Path) -> tuple[Path, Path]:
    """(images root, COCO JSON) for a split: the file itself for COCO, else the reader's result written
    as a COCO JSON in `scratch` whose file names are relative to the images' common folder."""
    if data.format == "coco":
        if split.annotations is None:
            raise MultiboxError(f"config: data.{name}.annotations is required to validate")
        return Path(split.images), Path(split.annotations)
    from multibox.data.datamodule import load_split

    dataset = load_split(split, name, data.format, data)
    files = [record.file for record in dataset.records]
    root = Path(os.path.commonpath([str(f.parent) for f in files])) if files else Path(split.images)
    coco = dataset.to_coco_gt()
    for image, record in zip(coco["images"], dataset.records, strict=True):
        image["file_name"] = record.file.relative_to(root).as_posix()
    path = scratch / f"{name}.json"
    path.write_text(json.dumps(coco), encoding="utf-8")
    return root, path


def _validate_command(
    config_path: Path | None,
    overrides: list[str],
    images: Path | None,
    annotations: Path | None,
    data_format: str,
    fix: Path | None,
    workers: int,
    max_rows: int,
    scratch: Path,
) -> int:
    from rich.console import Console

    if images is None and annotations is not None:
        raise MultiboxError("data validate: --annotations needs --images (or use a config, -c)")
    if images is not None and annotations is None and data_format == "coco":
        raise MultiboxError("data validate: a COCO dataset needs both --images and --annotations")
    if config_path is not None and images is not None:
        raise MultiboxError("data validate: give either a config (-c) or --images/--annotations, not both")
    if config_path is None and images is None:
        raise MultiboxError("data validate: give a config (-c CONFIG) or --images DIR --annotations FILE")
    if config_path is None and overrides:
        raise MultiboxError(f"data validate: KEY=VALUE overrides need a config (-c), got {overrides[0]!r}")
    splits: list[tuple[str, Path, Path]] = []
    if fix is not None and Path(fix).exists() and (not Path(fix).is_dir() or any(Path(fix).iterdir())):
        raise MultiboxError(f"{fix}: --fix output must not exist or be empty")
    if config_path is not None:
        from multibox.config import load_config

        config = load_config(config_path, overrides)
        for name in ("train", "val"):
            split = getattr(config.data, name)
            if split is not None:
                splits.append((name, *_as_coco(config.data, split, name, scratch)))
        if not splits:
            raise MultiboxError("config: neither data.train nor data.val is set")
    elif data_format != "coco":
        from multibox.config import DataConfig, SplitPaths

        assert images is not None  # no config, so --images was given (checked above)
        data = DataConfig.model_validate({"format": data_format})
        splits.append(
            ("dataset", *_as_coco(data, SplitPaths(images=images, annotations=annotations), "train", scratch))
        )
    else:
        assert images is not None and annotations is not None  # a COCO dataset needs both (checked above)
        splits.append(("dataset", Path(images), Path(annotations)))

    console = Console()
    failed = False
    for name, images_dir, annotation_file in splits:
        if fix is None:
            report = validate_coco(images_dir, annotation_file, workers, progress=True)
            print_report(report, max_rows, console)
            failed |= not report.ok
            continue
        out = Path(fix) / name if len(splits) > 1 else Path(fix)
        result = fix_coco(images_dir, annotation_file, out, workers, progress=True)
        print_report(result["report"], max_rows, console)
        fixed = validate_coco(out / "images", out / "annotations.json", workers, progress=True)
        console.print(
            f"fixed copy in {out}: {result['images_kept']} images kept, {result['images_dropped']} dropped; "
            f"{result['annotations_kept']} annotations kept, {result['annotations_dropped']} dropped, "
            f"{result['boxes_clipped']} boxes clipped; "
            + ("[green]validates clean[/]" if fixed.ok else "[red]still has errors[/]")
        )
        if not fixed.ok:
            print_report(fixed, max_rows, console)
        failed |= not fixed.ok
    return 1 if failed else 0
