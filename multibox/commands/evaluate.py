"""``multibox eval``: COCO (and VOC) metrics of a checkpoint or an exported model, with an optional report."""

from __future__ import annotations

import argparse

from multibox.commands.slicing import slicing_of
from multibox.errors import MultiboxError


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
