"""``--tile/--overlap/--full-frame/--merge`` (sliced inference for large frames), shared by eval and predict, and the
``HxW`` option type."""

from __future__ import annotations

import argparse
from typing import Any

from multibox.errors import MultiboxError


def hxw(text: str) -> tuple[int, int]:
    """An ``HxW`` option value (``--tile 640x640``, ``data synth --size 96x160``) as (H, W)."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected HxW such as 128x128, got {text!r}")
    return int(parts[0]), int(parts[1])


def add_tile_options(parser: argparse.ArgumentParser) -> None:
    """Sliced inference for large frames (see multibox.engine.sliced)."""
    parser.add_argument(
        "--tile",
        type=hxw,
        metavar="HxW",
        help="slice each frame into HxW tiles (native pixels), "
        "run them as batches and merge their detections (small objects in large frames)",
    )
    parser.add_argument(
        "--overlap", type=float, default=0.2, help="tile overlap, fraction of the tile in [0, 1) (default 0.2)"
    )
    parser.add_argument(
        "--full-frame", action="store_true", help="with --tile: also run the whole frame downscaled (large objects)"
    )
    parser.add_argument(
        "--merge",
        choices=["nms", "merge"],
        default=None,
        help="with --tile: class-wise NMS, or join boxes cut by a tile edge first (default nms)",
    )


def slicing_of(args: argparse.Namespace) -> Any:
    """The ``engine.sliced.Slicing`` the options ask for, or None without --tile."""
    if args.tile is None:
        if args.full_frame or args.merge is not None or args.overlap != 0.2:
            raise MultiboxError("--overlap/--full-frame/--merge: need --tile HxW")
        return None
    from multibox.engine.sliced import DEFAULT_MERGE, Slicing

    return Slicing(args.tile, args.overlap, args.full_frame, args.merge or DEFAULT_MERGE)


def tile_kwargs(slicing: Any) -> dict[str, Any]:
    """The keyword arguments ``inference.predict.predict`` takes for `slicing` (none without it)."""
    if slicing is None:
        return {}
    return {"tile": slicing.tile, "overlap": slicing.overlap, "full_frame": slicing.full_frame, "merge": slicing.merge}
