"""`multibox config show` and `multibox config init`: where a newcomer starts a config from.

``show`` prints the config a command line resolves to (every default filled in, paths absolute), as
LightningCLI's ``--print_config`` and Ultralytics' ``yolo cfg`` do. ``init`` prints every key with its
default and its one line of help as a comment; the output validates as is.
"""

from __future__ import annotations

import argparse
import textwrap
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from multibox.config import Config, load_config, parse_config
from multibox.dataset_formats import FORMAT_NAMES

# Where each format's own tools put a dataset, relative to the config file (see the README's data formats).
EXAMPLE_SPLITS: dict[str, tuple[dict[str, str], dict[str, str]]] = {
    "coco": (
        {"images": "coco/train2017", "annotations": "coco/annotations/instances_train2017.json"},
        {"images": "coco/val2017", "annotations": "coco/annotations/instances_val2017.json"},
    ),
    "voc": (
        {"images": "VOCdevkit/VOC2012", "annotations": "train"},
        {"images": "VOCdevkit/VOC2012", "annotations": "val"},
    ),
    "yolo": (
        {"images": "dataset/images/train", "annotations": "dataset/labels/train"},
        {"images": "dataset/images/val", "annotations": "dataset/labels/val"},
    ),
    "txt": (
        {"images": "dataset/images", "annotations": "dataset/train.txt"},
        {"images": "dataset/images", "annotations": "dataset/val.txt"},
    ),
    "openimages": (
        {"images": "openimages", "annotations": "train"},
        {"images": "openimages", "annotations": "validation"},
    ),
    "cognata": ({"images": "cognata/train"}, {"images": "cognata/val"}),
}
HELP_WIDTH = 110


def show_config(config_path: Path, overrides: list[str]) -> str:
    """The resolved config of a command line, as YAML (what `multibox train -c` accepts back)."""
    return yaml.safe_dump(load_config(config_path, overrides).to_dict(), sort_keys=False)


def init_config(model: str | None = None, fmt: str = "coco") -> str:
    """A complete starting config: every key with its default, each preceded by its help as a comment."""
    train, val = EXAMPLE_SPLITS[fmt]
    raw: dict[str, Any] = {"data": {"format": fmt, "train": train, "val": val}}
    if model is not None:
        raw["model"] = {"name": model}
    values = parse_config(raw, "config init").to_dict()
    header = [
        f"# multibox config: model {values['model']['name']}, data format {fmt}. Every key is shown with its default.",
        "# Relative paths resolve from this file's folder; KEY=VALUE overrides on the command line from the working",
        "# directory; train.output_dir from the working directory. Check with: multibox config show -c THIS_FILE",
    ]
    return "\n".join(header + _lines(Config, values, 0)) + "\n"


def _lines(model: type[BaseModel], values: dict[str, Any], depth: int) -> list[str]:
    pad = "  " * depth
    lines: list[str] = []
    for name, field in model.model_fields.items():
        value = values.get(name)
        if field.description:
            lines += [f"{pad}# {line}" for line in textwrap.wrap(field.description, HELP_WIDTH - len(pad))]
        section = _section_type(field.annotation)
        if section is not None and isinstance(value, dict):
            if depth == 0 and lines:
                lines.append("")
            lines.append(f"{pad}{name}:")
            lines += _lines(section, value, depth + 1)
        else:
            lines.append(f"{pad}{name}: {_scalar(value)}")
    return lines


def _section_type(annotation: Any) -> type[BaseModel] | None:
    """The section model of a field (also inside `X | None`), None for a plain value."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _scalar(value: Any) -> str:
    """One value in YAML flow style on one line (null, 0.5, [300, 300], text)."""
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`multibox config`'s options (cli.py makes the subparser)."""
    config_sub = parser.add_subparsers(dest="config_command", required=True)
    show = config_sub.add_parser("show", help="the fully resolved config of a command line, defaults filled in")
    show.add_argument("-c", "--config", required=True, type=Path, help="YAML or JSON config")
    show.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. train.epochs=2")
    init = config_sub.add_parser(
        "init", help="every key with its default and help as a comment: multibox config init > my.yaml"
    )
    init.add_argument("--model", help="model.name, e.g. ssdlite320_mobilenet_v3_large (default ssd300_vgg16)")
    init.add_argument(
        "--format",
        default="coco",
        choices=FORMAT_NAMES,
        help="data.format, with example paths laid out as that format's tools do (default coco)",
    )


def config_command(args: Any) -> None:
    """Dispatch `multibox config show|init` and print the YAML."""
    if args.config_command == "show":
        print(show_config(args.config, args.overrides), end="")
    else:
        print(init_config(args.model, args.format), end="")
