"""``multibox summary``: layers, parameters, default boxes, MACs and memory of a configured model (no weights)."""

from __future__ import annotations

import argparse
import json

from multibox.config import load_config


def summary_command(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.overrides)
    from multibox.models.summary import print_summary, summarize

    summary = summarize(config, args.depth)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_summary(summary)
    return 0
