"""``--tile/--overlap/--full-frame/--merge`` (sliced inference for large frames), shared by eval and predict."""

from __future__ import annotations

import argparse
from typing import Any

from multibox.errors import MultiboxError


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
