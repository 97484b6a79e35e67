"""`multibox runs ls DIR [--plot]`: one table of the runs under DIR, their key metrics and what differs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from multibox.engine.runs import KEY_METRICS, RunRecord, differing_keys, find_runs, plot_val_map


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def runs_table(runs: list[RunRecord], keys: list[str]) -> Table:
    """A row per run, best val mAP first (runs without metrics last): metrics, then the differing config keys."""
    ordered = sorted(runs, key=lambda r: (r.metrics.get("map") is None, -(r.metrics.get("map") or 0.0), r.name))
    table = Table(title=f"{len(runs)} runs" + ("" if keys else " (identical configs)"), title_justify="left")
    table.add_column("run")
    for name in KEY_METRICS:
        table.add_column(name, justify="right")
    for key in keys:
        table.add_column(key)
    for run in ordered:
        table.add_row(
            run.name, *(_cell(run.metrics.get(m)) for m in KEY_METRICS), *(_cell(run.config.get(k)) for k in keys)
        )
    return table


def runs_ls_command(folder: Path, plot: Path | bool | None) -> int:
    runs = find_runs(folder)
    console = Console(width=max(Console().width, 160))
    console.print(runs_table(runs, differing_keys(runs)))
    if plot:
        path = Path(folder) / "runs_val_map.png" if plot is True else Path(plot)
        drawn = plot_val_map(runs, path)
        console.print(f"val mAP curves of {drawn} runs: {path}", highlight=False)
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`multibox runs`'s options (cli.py makes the subparser)."""
    runs = parser.add_subparsers(dest="runs_command", required=True)
    runs_ls = runs.add_parser("ls", help="a table of the runs under DIR: key metrics and the config keys that differ")
    runs_ls.add_argument("dir", type=Path, help="folder holding run folders (each with config.yaml, metrics.json)")
    runs_ls.add_argument(
        "--plot",
        nargs="?",
        const=True,
        default=None,
        type=Path,
        metavar="PNG",
        help="also overlay the runs' val mAP curves in one PNG (default DIR/runs_val_map.png)",
    )


def runs_command(args: Any) -> int:
    """``multibox runs ls``."""
    return runs_ls_command(args.dir, args.plot)
