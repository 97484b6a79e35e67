"""``multibox predict``: detections on images, folders and videos, written as annotated copies and JSON."""

from __future__ import annotations

import argparse
from pathlib import Path

from multibox.commands.slicing import add_tile_options, slicing_of, tile_kwargs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`multibox predict`'s options (cli.py makes the subparser)."""
    parser.add_argument("--weights", required=True, type=Path, help="checkpoint (.ckpt)")
    parser.add_argument(
        "--source", required=True, type=Path, help="image file, folder (recursive) or video (.mp4, .avi, ...)"
    )
    parser.add_argument(
        "--out", required=True, type=Path, help="new folder for annotated images or video and predictions.json"
    )
    parser.add_argument("--conf", type=float, default=0.3, help="minimum score kept (default 0.3)")
    parser.add_argument("--iou", type=float, help="NMS IoU threshold (default: the checkpoint's eval.nms_threshold)")
    parser.add_argument(
        "--max-det", type=int, help="detections kept per image (default: the checkpoint's eval.max_detections)"
    )
    parser.add_argument(
        "--classes", nargs="+", metavar="CLASS", help="keep only these classes: names or 0-based indices"
    )
    parser.add_argument(
        "--save-txt", action="store_true", help="also write labels/<image>.txt: class cx cy w h score (YOLO style)"
    )
    parser.add_argument("--batch-size", type=int, default=8, help="images or frames per forward pass (default 8)")
    parser.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda or cuda:N")
    parser.add_argument("--half", action="store_true", help="fp16 inference (CUDA only)")
    add_tile_options(parser)


def predict_command(args: argparse.Namespace) -> int:
    from multibox.inference.predict import predict

    classes = [c.strip() for item in args.classes for c in item.split(",") if c.strip()] if args.classes else None
    results = predict(
        args.weights,
        args.source,
        args.out,
        args.conf,
        args.batch_size,
        args.device,
        iou=args.iou,
        max_det=args.max_det,
        classes=classes,
        half=args.half,
        save_txt=args.save_txt,
        **tile_kwargs(slicing_of(args)),
    )
    print(f"{len(results)} detections written to {args.out / 'predictions.json'}")
    return 0
