"""What makes a checkpoint safe to write, safe to read and exact to resume from.

- :class:`AtomicCheckpointIO` writes each checkpoint to a temporary file in the same folder,
  fsyncs it and renames it over the final name: a crash mid-write leaves the previous
  checkpoint whole, and a partial file never carries a checkpoint's name.
- It reads with ``torch.load(weights_only=True)``, including Lightning's ``ckpt_path`` resume
  path, so a crafted pickle cannot run code.
- :class:`RandomStateCallback` puts the torch, CUDA, numpy and Python random states into the
  checkpoint (Lightning saves none of them), so a resumed run shuffles, augments and draws
  exactly as an uninterrupted one. Everything it stores is tensors, ints and strings, which
  ``weights_only`` loading accepts.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from multibox.engine.checkpoint_file import atomic_torch_save, safe_torch_load

__all__ = ["AtomicCheckpointIO", "RandomStateCallback", "atomic_torch_save", "safe_torch_load"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO, writing atomically and reading with weights_only=True only."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(
        self, path: str | Path, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        # `weights_only` is ignored on purpose: Lightning passes None, which some torch settings turn into False.
        return safe_torch_load(path, map_location if map_location is not None else "cpu")


def capture_random_state() -> dict[str, Any]:
    """The torch, CUDA (when initialised), numpy and Python generators' states, as weights_only-safe values."""
    legacy = np.random.get_state(legacy=True)
    assert isinstance(legacy, tuple)  # numpy's global RandomState is MT19937, whose legacy state is a tuple
    kind, keys, position, has_gauss, cached_gaussian = legacy
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": random.getstate(),  # (version, tuple of ints, None)
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_random_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_random_state`; CUDA states are set only when the device count matches."""
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


class RandomStateCallback(L.Callback):
    """Saves the random generators' states in every checkpoint and restores them on resume.

    Lightning restores callbacks before it builds the train loader and draws its shuffling and
    worker seeds, so a run resumed from an end-of-epoch checkpoint continues the same random
    streams. All DDP ranks are seeded alike and draw alike, so rank 0's states serve every rank.
    """

    def state_dict(self) -> dict[str, Any]:
        return capture_random_state()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict:
            restore_random_state(state_dict)
