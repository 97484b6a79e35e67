"""`multibox export`: a checkpoint to ONNX, TorchScript or OpenVINO IR, FP32, FP16 or INT8, checked before it is
kept."""

from __future__ import annotations

import argparse
from pathlib import Path

from multibox.inference.export import export_checkpoint
from multibox.inference.quantize import CALIB_METHODS, DEFAULT_ATOL, DEFAULT_CALIB_METHOD, parse_fp32_layers


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`multibox export`'s options (cli.py makes the subparser)."""
    parser.add_argument("--weights", required=True, type=Path, help="checkpoint (.ckpt)")
    parser.add_argument(
        "--format",
        default="onnx",
        choices=["onnx", "torchscript", "openvino"],
        help="default onnx; openvino writes NAME.xml + NAME.bin (pip install 'multibox[deploy]')",
    )
    parser.add_argument(
        "--out", type=Path, help="output file (default: next to the checkpoint, CKPT[_nms].onnx|.torchscript)"
    )
    parser.add_argument("--nms", action="store_true", help="score threshold, per-class NMS and top-k inside the graph")
    parser.add_argument("--dynamic-batch", action="store_true", help="any batch size (default: fixed at --batch-size)")
    parser.add_argument(
        "--batch-size", type=int, default=1, help="batch of the exported graph and of the check (default 1)"
    )
    parser.add_argument(
        "--sample-images", type=Path, metavar="DIR", help="images for the parity check (default: random pixels)"
    )
    parser.add_argument(
        "--atol",
        type=float,
        default=DEFAULT_ATOL,
        help=f"largest box/score difference from PyTorch allowed (default {DEFAULT_ATOL:g})",
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing output file")
    parser.add_argument("--int8", action="store_true", help="post-training INT8 (onnx: QDQ static; openvino: NNCF)")
    parser.add_argument(
        "--calib-images",
        type=Path,
        metavar="DIR",
        help="INT8 calibration images (default: the config's training images)",
    )
    parser.add_argument("--calib-count", type=int, default=200, help="INT8 calibration images used (default 200)")
    parser.add_argument(
        "--fp32-layers",
        default="first",
        metavar="LAYERS",
        help="convolutions kept in float with --int8: first, head, none or name parts, comma-separated (default first)",
    )
    parser.add_argument(
        "--calib-method",
        choices=CALIB_METHODS,
        default=DEFAULT_CALIB_METHOD,
        help="onnx --int8: activation ranges from the calibration images (default percentile: 99.999th; "
        "OpenVINO's NNCF sets its own)",
    )
    parser.add_argument("--fp16", action="store_true", help="openvino: FP16 weights")


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
        calib_method=args.calib_method,
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
