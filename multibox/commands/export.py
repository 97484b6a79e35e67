"""`multibox export`: a checkpoint to ONNX, TorchScript or OpenVINO IR, FP32, FP16 or INT8, checked before it is
kept."""

from __future__ import annotations

import argparse

from multibox.inference.export import export_checkpoint
from multibox.inference.quantize import parse_fp32_layers


def export_command(args: argparse.Namespace) -> None:
    """Run the export and say what was checked and written."""
    result = export_checkpoint(
        args.weights,
        args.format,
        args.out,
        args.nms,
        args.dynamic_batch,
        args.force,
        args.sample_images,
        args.batch_size,
        args.atol,
        int8=args.int8,
        calib_images=args.calib_images,
        calib_count=args.calib_count,
        fp32_layers=parse_fp32_layers(args.fp32_layers),
        half=args.fp16,
    )
    for note in result.notes:
        print(note)
    for batch, parity in result.checks.items():
        print(f"parity at batch {batch}: {parity.describe()}")
    if result.precision == "int8":
        kept = ", ".join(result.fp32_layers) if result.fp32_layers else "none"
        print(f"INT8: convolutions kept in float: {kept}")
    if result.agreement is not None:
        print(f"{result.precision.upper()} against FP32: {result.agreement.describe()}")
    print(
        f"wrote {result.path}"
        + (f" and {result.path.with_suffix('.bin').name}" if result.path.suffix == ".xml" else "")
    )
