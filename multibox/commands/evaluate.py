"""``multibox eval``: COCO (and VOC) metrics of a checkpoint or an exported model, with an optional report."""

from __future__ import annotations

import argparse
from pathlib import Path

from multibox.commands.slicing import add_tile_options, slicing_of
from multibox.errors import MultiboxError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`multibox eval`'s options (cli.py makes the subparser)."""
    parser.add_argument(
        "-c", "--config", type=Path, help="config for data and eval settings (default: the checkpoint's)"
    )
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    parser.add_argument(
        "--weights", required=True, type=Path, help="checkpoint (.ckpt) or exported model (.onnx, OpenVINO .xml)"
    )
    parser.add_argument("--out", type=Path, help="write the metrics as JSON here")
    parser.add_argument(
        "--plots",
        nargs="?",
        const=True,
        default=None,
        type=Path,
        metavar="DIR",
        help="also write PR curves, confusion matrix, worst-image gallery and report.md/.html into DIR "
        "(default: <run>/eval, or eval-2, ... when that holds a report)",
    )
    parser.add_argument(
        "--plot-conf",
        type=float,
        default=0.3,
        metavar="SCORE",
        help="score threshold of the confusion matrix and gallery (default 0.3; metrics use every detection)",
    )
    add_tile_options(parser)


def eval_command(args: argparse.Namespace) -> int:
    from multibox.engine.evaluate import check_report_dir, default_report_dir, evaluate_checkpoint
    from multibox.metrics.coco import print_metrics
    from multibox.reporting.report import save_metrics_json

    report_dir = (
        None
        if args.plots is None
        else check_report_dir(default_report_dir(args.weights) if args.plots is True else args.plots)
    )
    if args.weights.suffix.lower() in (".onnx", ".xml"):  # an exported model, read through its metadata
        if args.tile is not None:
            raise MultiboxError("--tile: sliced evaluation takes a checkpoint (.ckpt), not an exported model")
        from multibox.inference.exported_eval import evaluate_exported

        metrics = evaluate_exported(args.weights, args.config, args.overrides, report_dir, args.plot_conf)
    else:
        metrics = evaluate_checkpoint(
            args.weights, args.config, args.overrides, report_dir, args.plot_conf, slicing=slicing_of(args)
        )
    print_metrics(metrics)
    if args.out is not None:
        save_metrics_json(metrics, args.out)
    if report_dir is not None:
        print(f"report: {report_dir / 'report.md'} (and report.html)")
    return 0
