"""``multibox train``: train as configured, print the metrics, say where the outputs are and how to resume."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from multibox.config import load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`multibox train`'s options (cli.py makes the subparser)."""
    parser.add_argument("-c", "--config", required=True, type=Path, help="YAML or JSON config")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. train.epochs=2")
    parser.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        metavar="CKPT",
        help="continue a run: the given checkpoint, or the newest in train.output_dir",
    )


def train_command(args: argparse.Namespace) -> int:
    """0 when done; 130 when interrupted (Ctrl-C, SIGTERM) after the last checkpoint was saved."""
    config = load_config(args.config, args.overrides)
    from multibox.engine.train import train  # after the config: a config error answers before Lightning loads
    from multibox.errors import TrainingInterrupted
    from multibox.metrics.coco import print_metrics

    try:
        metrics = train(config, args.resume)
    except TrainingInterrupted as stop:
        again = " ".join(["multibox train -c", shlex.quote(str(args.config)), *map(shlex.quote, args.overrides)])
        print(
            f"\ninterrupted at epoch {stop.epoch} step {stop.step}; last checkpoint: "
            f"{stop.checkpoint or 'none'}; continue with: {again}" + (" --resume" if stop.checkpoint else ""),
            file=sys.stderr,
        )
        return 130
    if metrics is not None:
        print_metrics(metrics)
    if metrics is not None and config.train.mlflow.register_model and "mlflow" in config.train.loggers:
        from multibox.inference.register import register_onnx

        version = register_onnx(Path(config.train.output_dir), config.train.mlflow.register_model)
        print(f"registered best.ckpt as ONNX model {config.train.mlflow.register_model!r} version {version} in MLflow")
    report = Path(config.train.output_dir) / "report.md"
    written = metrics is not None and config.train.report  # metrics: there was a val set to report on
    print(f"outputs in {config.train.output_dir}" + (f"; report: {report}" if written else ""))
    return 0
