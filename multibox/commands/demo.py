"""``multibox demo``: synthetic data, a short training run and its report, in one folder (multibox/demo.py)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`multibox demo`'s options (cli.py makes the subparser)."""
    parser.add_argument("--out", type=Path, default=Path("demo_out"))
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides of the demo config")


def demo_command(args: argparse.Namespace) -> int:
    from multibox.demo import run_demo

    run_demo(args.out, args.overrides)
    return 0
