"""``multibox anchors fit``: fit the default boxes to a config's training set, print the coverage and write the
``anchors:`` YAML fragment."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from multibox.boxes.anchor_fit import AnchorFit, fit_anchors
from multibox.engine.anchors import flow, print_fit
from multibox.errors import MultiboxError
from multibox.models.detector import model_geometry


def write_fragment(fit: AnchorFit, path: Path, source: str) -> Path:
    """Write the `anchors:` YAML fragment (never overwriting a file); returns the path."""
    path = Path(path)
    if path.exists():
        raise MultiboxError(f"{path}: already exists; pass another --out (nothing is overwritten)")
    if not fit.changed:
        raise MultiboxError(f"{path}: not written, the current anchors already cover the most boxes")
    assert fit.box_sizes is not None and fit.aspect_ratios is not None  # fit.changed
    overall = fit.buckets["all"]
    text = (
        f"# multibox anchors fit -c {source}: input {fit.input_size[0]}x{fit.input_size[1]}, "
        f"{overall['boxes']} training boxes\n"
        f"# coverage (best IoU >= {fit.iou_threshold:g}): {overall['before']:.1%} -> {overall['after']:.1%}; "
        f"default boxes {fit.boxes_before} -> {fit.boxes_after}\n"
        "# Use: copy the anchors keys into the config (they replace scales/sizes), or pass them as overrides:\n"
        f"#   anchors.box_sizes={flow(fit.box_sizes)} anchors.aspect_ratios={flow(fit.aspect_ratios)}\n"
        "anchors:\n"
        f"  box_sizes: {flow(fit.box_sizes)}\n"
        f"  aspect_ratios: {flow(fit.aspect_ratios)}\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def fit_command(
    config_path: Path, overrides: list[str], out: Path | None = None, budget: int | None = None
) -> AnchorFit:
    """`multibox anchors fit`: fit to the config's training split, print the table, write the fragment."""
    from multibox.config import load_config
    from multibox.data.datamodule import DetectionDataModule

    config = load_config(config_path, overrides)
    if budget is not None and budget < 1:
        raise MultiboxError(f"--budget: must be a positive number of default boxes, got {budget}")
    out = Path(out) if out is not None else Path(config.train.output_dir) / "anchors.yaml"
    if out.exists():
        raise MultiboxError(f"{out}: already exists; pass another --out (nothing is overwritten)")
    train_set = DetectionDataModule(config).train_set
    fit = fit_anchors(config, train_set, model_geometry(config), budget=budget, seed=config.train.seed)
    print_fit(fit)
    if fit.changed:
        write_fragment(fit, out, str(config_path))
        print(f"wrote {out}")
    return fit


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`multibox anchors`'s options (cli.py makes the subparser)."""
    anchors = parser.add_subparsers(dest="anchors_command", required=True)
    fit = anchors.add_parser(
        "fit", help="fit default-box sizes and aspect ratios to the training boxes (scale-aware SSD)"
    )
    fit.add_argument("-c", "--config", required=True, type=Path, help="YAML or JSON config")
    fit.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. data.input_size=[384,640]"
    )
    fit.add_argument(
        "--out",
        type=Path,
        help="anchors YAML fragment to write (default <train.output_dir>/anchors.yaml; never overwritten)",
    )
    fit.add_argument("--budget", type=int, help="most default boxes allowed (default: as many as the current layout)")


def anchors_command(args: Any) -> int:
    """``multibox anchors fit``."""
    fit_command(args.config, args.overrides, args.out, args.budget)
    return 0
