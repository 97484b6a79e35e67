"""``multibox demo``: synthetic data, a short training run and its report, in one folder (multibox/demo.py)."""

from __future__ import annotations

import argparse


def demo_command(args: argparse.Namespace) -> int:
    from multibox.demo import run_demo

    run_demo(args.out, args.overrides)
    return 0
