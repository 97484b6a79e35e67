"""``multibox data synth|validate|stats|convert``: make, check, describe and convert datasets."""

from __future__ import annotations

import argparse
from pathlib import Path


def data_command(args: argparse.Namespace) -> int:
    if args.data_command == "synth":
        return _synth(args)
    if args.data_command == "validate":
        from multibox.commands.validate import validate_command

        return validate_command(
            args.config,
            args.overrides,
            args.images,
            args.annotations,
            args.format,
            args.fix,
            args.workers,
            args.max_rows,
        )
    if args.data_command == "stats":
        from multibox.commands.data_stats import stats_command

        stats_command(args.config, args.overrides, args.split, args.out)
        return 0
    return _convert(args)


def _synth(args: argparse.Namespace) -> int:
    from multibox.data.synth import make_synthetic_dataset

    make_synthetic_dataset(
        args.out_dir,
        args.images,
        args.size,
        args.seed,
        object_sizes=(args.min_size, args.max_size),
        max_objects=args.max_objects,
    )
    print(f"wrote {args.images} images and annotations.json to {args.out_dir}")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from multibox.data.formats import convert

    names = args.class_names
    if names is not None and not Path(names).is_file():
        names = [n.strip() for n in names.split(",") if n.strip()]
    classes = [n.strip() for n in args.classes.split(",") if n.strip()] if args.classes else None
    dataset = convert(
        args.source_format,
        args.target_format,
        args.src,
        args.dst,
        annotations=args.annotations,
        class_names=names,
        classes=classes,
    )
    crowd = sum(int(record.iscrowd.sum()) for record in dataset.records)
    dropped = crowd if args.target_format in ("yolo", "txt") else 0  # formats without a crowd/difficult flag
    left_out = f" ({dropped} crowd/difficult boxes left out)" if dropped else ""
    print(
        f"wrote {len(dataset)} images, {dataset.num_boxes - dropped} boxes, {dataset.num_classes} classes as "
        f"{args.target_format} to {args.dst}{left_out}"
    )
    return 0
