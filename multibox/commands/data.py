"""``multibox data synth|validate|stats|convert``: make, check, describe and convert datasets."""

from __future__ import annotations

import argparse
from pathlib import Path

from multibox.commands.slicing import hxw
from multibox.dataset_formats import FORMAT_NAMES, WRITABLE_FORMATS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`multibox data`'s options (cli.py makes the subparser)."""
    data = parser.add_subparsers(dest="data_command", required=True)
    synth = data.add_parser("synth", help="write a synthetic COCO dataset of coloured shapes")
    synth.add_argument("out_dir", type=Path)
    synth.add_argument("--images", type=int, default=200)
    synth.add_argument("--size", type=hxw, default=(128, 128), help="HxW (default 128x128)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--min-size", type=float, default=0.06, help="smallest shape, fraction of the shorter side")
    synth.add_argument("--max-size", type=float, default=0.5, help="largest shape, fraction of the shorter side")
    synth.add_argument(
        "--max-objects", type=int, default=6, help="most shapes per image (default 6; e.g. 40 for large frames)"
    )
    validate = data.add_parser("validate", help="check every image and annotation of a dataset (exit 1 on errors)")
    validate.add_argument("-c", "--config", type=Path, help="config whose data.train / data.val are checked")
    validate.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides of the config")
    validate.add_argument("--images", type=Path, help="images folder or dataset root (instead of a config)")
    validate.add_argument("--annotations", type=Path, help="annotation file or split, as data.train.annotations")
    validate.add_argument(
        "--format",
        default="coco",
        choices=FORMAT_NAMES,
        help="annotation format (default coco)",
    )
    validate.add_argument(
        "--fix", type=Path, metavar="OUT", help="write a cleaned copy into OUT (new or empty folder; COCO format)"
    )
    validate.add_argument("--workers", type=int, default=8, help="image decoding threads (default 8)")
    validate.add_argument("--max-rows", type=int, default=50, help="problems listed in the table (default 50)")
    stats = data.add_parser("stats", help="box statistics and default-box coverage of a config's dataset")
    stats.add_argument("-c", "--config", required=True, type=Path, help="YAML or JSON config")
    stats.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. data.input_size=[512,512]"
    )
    stats.add_argument("--split", choices=["train", "val"], default="train", help="which split (default train)")
    stats.add_argument(
        "--out", type=Path, help="folder for stats.png and stats.json (default <train.output_dir>/data_stats)"
    )
    convert = data.add_parser("convert", help="convert a dataset between formats (into a new folder; never overwrites)")
    convert.add_argument("--from", dest="source_format", required=True, choices=FORMAT_NAMES)
    convert.add_argument("--to", dest="target_format", required=True, choices=WRITABLE_FORMATS)
    convert.add_argument("src", type=Path, help="dataset root or images folder, as data.train.images")
    convert.add_argument("dst", type=Path, help="new or empty output folder")
    convert.add_argument(
        "--annotations", help="as data.train.annotations (coco/txt default: SRC/annotations.json|txt with SRC/images)"
    )
    convert.add_argument("--class-names", help="names file, or comma-separated names (voc, yolo, txt)")
    convert.add_argument("--classes", help="openimages: comma-separated display names to keep")


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
