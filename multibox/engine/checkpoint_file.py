"""Checkpoint files without Lightning: written all or nothing, read with ``weights_only=True`` only.

Kept apart from :mod:`multibox.engine.checkpoint_io` (Lightning's side) so that `predict`, `export` and the
Python ``Detector`` read checkpoints without importing Lightning: their imports went from 11.4 to 8.4 CPU-s on the
2-core dev machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from multibox.errors import MultiboxError
from multibox.outputs import atomic_write


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """torch.save to `path` via a same-folder temporary file, fsync and os.replace (all or nothing)."""
    atomic_write(path, lambda file: torch.save(obj, file))


def safe_torch_load(path: str | Path, map_location: Any = "cpu") -> Any:
    """torch.load(weights_only=True) with one-line errors for missing, corrupt or hostile files."""
    path = Path(path)
    if not path.is_file():
        raise MultiboxError(f"{path}: checkpoint not found")
    if path.stat().st_size == 0:
        raise MultiboxError(f"{path}: not a readable checkpoint (empty file)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises many types for corrupt or hostile files
        reason = str(error).splitlines()[0].split(". ")[0][:120] if str(error) else type(error).__name__
        raise MultiboxError(f"{path}: not a readable checkpoint ({reason})") from None
