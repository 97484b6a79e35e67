"""``multibox predict``: detections on images, folders and videos, written as annotated copies and JSON."""

from __future__ import annotations

import argparse

from multibox.commands.slicing import slicing_of, tile_kwargs


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
