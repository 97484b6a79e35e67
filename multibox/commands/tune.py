"""`multibox tune`: an Optuna study over a config; every trial is a normal run in DIR/trial_NNN/."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from multibox.config import load_config
from multibox.engine.tuning import (
    TrialRow,
    check_tunable,
    default_storage,
    load_space,
    make_objective,
    mask_password,
    open_storage,
    open_study,
    trial_rows,
    write_best_config,
    write_plots,
    write_report,
)
from multibox.errors import MultiboxError
from multibox.outputs import writable_dir

BEST_SHOWN = 5


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def _trial_line(row: TrialRow) -> str:
    value = f" val mAP {row.value:.4f}" if row.value is not None else ""
    reason = f" ({row.reason})" if row.reason else ""
    return f"trial {row.number} {row.state}{value}{reason}: {_params_text(row.params)}"


def best_table(rows: list[TrialRow]) -> Table:
    """The best completed trials with their values."""
    complete = [r for r in rows if r.state == "complete"][:BEST_SHOWN]
    keys = list(dict.fromkeys(k for r in complete for k in r.params))
    table = Table(title=f"best trials (of {len(rows)})", title_justify="left")
    for column in ["trial", "val mAP", *keys, "seconds", "folder"]:
        table.add_column(column, justify="left" if column in ("folder", *keys) else "right")
    for r in complete:
        cells = [f"{r.params[k]:.4g}" if isinstance(r.params.get(k), float) else str(r.params.get(k, "")) for k in keys]
        table.add_row(str(r.number), f"{r.value:.4f}", *cells, f"{r.seconds or 0:.0f}", r.output_dir)
    return table


def tune_command(
    config_path: Path,
    overrides: list[str],
    trials: int,
    space_path: Path,
    out: Path | None,
    storage: str | None,
    study_name: str,
    timeout: float | None,
) -> int:
    """Check everything first (space, config, storage, study), then run `trials` trials here; other workers
    may run theirs in the same study at the same time. Exit 0 once the study holds a completed trial."""
    if trials < 1:
        raise MultiboxError(f"--trials: must be at least 1, got {trials}")
    if timeout is not None and timeout <= 0:
        raise MultiboxError(f"--timeout: must be positive seconds, got {timeout}")
    base = load_config(config_path, overrides)
    check_tunable(base)
    space = load_space(space_path, config_path, overrides)
    out = Path(out if out is not None else base.train.output_dir)
    writable_dir(out, "tuning outputs")
    url = storage or default_storage(out)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own one line per trial, no tracebacks
    study = open_study(open_storage(url), study_name, space)
    console = Console(soft_wrap=True)  # whole lines, also into a log file
    before = len(study.trials)
    console.print(
        f"study {study_name!r} in {mask_password(url)}: {before} trials so far; running {trials} more into {out}"
    )
    from multibox.engine.train import train

    def report(study: Any, frozen: Any) -> None:
        row = next(r for r in trial_rows(study, space) if r.number == frozen.number)
        console.print(_trial_line(row), highlight=False)

    objective = make_objective(config_path, overrides, space, out, train)
    study.optimize(
        objective, n_trials=trials, timeout=timeout, catch=(Exception,), callbacks=[report], gc_after_trial=True
    )
    rows = trial_rows(study, space)
    plots = write_plots(study, out)
    write_report(study, rows, plots, url, out / "tune_report.md")
    if not any(r.state == "complete" for r in rows):
        console.print(f"no trial of study {study_name!r} completed; see {out / 'tune_report.md'}")
        return 1
    # A log file has no terminal width (rich assumes 80): the table gets the room its columns need.
    Console(width=max(Console().width, 160)).print(best_table(rows))
    write_best_config(study, space, config_path, overrides, out / "best_config.yaml", out)
    console.print(
        f"best config: {out / 'best_config.yaml'} (multibox train -c {out / 'best_config.yaml'}); "
        f"report: {out / 'tune_report.md'}",
        highlight=False,
    )
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`multibox tune`'s options (cli.py makes the subparser)."""
    parser.add_argument("-c", "--config", required=True, type=Path, help="YAML or JSON config")
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides of the config, for every trial"
    )
    parser.add_argument("--trials", required=True, type=int, help="trials this process runs (other workers add theirs)")
    parser.add_argument(
        "--space", required=True, type=Path, help="YAML: config key -> {log|int|float: [low, high]} or {choice: [...]}"
    )
    parser.add_argument(
        "--out", type=Path, help="folder of the trials, study.db and the report (default train.output_dir)"
    )
    parser.add_argument(
        "--storage",
        help="Optuna RDB URL shared by workers, e.g. postgresql://user:pw@host/db (default sqlite:///OUT/study.db)",
    )
    parser.add_argument("--study", default="multibox", help="study name; the same name continues it (default multibox)")
    parser.add_argument("--timeout", type=float, metavar="S", help="start no new trial after S seconds")


def tune_args_command(args: Any) -> int:
    """``multibox tune`` from the parsed arguments."""
    return tune_command(
        args.config, args.overrides, args.trials, args.space, args.out, args.storage, args.study, args.timeout
    )
