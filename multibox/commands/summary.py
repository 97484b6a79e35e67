"""``multibox summary``: layers, parameters, default boxes, MACs and memory of a configured model (no weights)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from multibox.config import load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`multibox summary`'s options (cli.py makes the subparser)."""
    parser.add_argument("-c", "--config", required=True, type=Path, help="YAML or JSON config")
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. data.input_size=[512,512]"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    parser.add_argument("--depth", type=int, default=3, help="deepest module nesting shown (default 3)")


def summary_command(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.overrides)
    from multibox.models.summary import print_summary, summarize

    summary = summarize(config, args.depth)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_summary(summary)
    return 0
