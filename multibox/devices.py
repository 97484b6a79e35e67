"""The two device decisions every command makes: which device, and how many CPU threads to give PyTorch.

Training, evaluation, prediction and the Python ``Detector`` all take them from here, so ``auto`` means the same
everywhere and a bad name is the same one-line error everywhere.
"""

from __future__ import annotations

import os

import torch

from multibox.errors import MultiboxError


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' or 'gpu' (the GPU when there is one), 'cpu', 'cuda', 'cuda:1', ...; a one-line error otherwise."""
    if name in ("auto", "gpu"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise MultiboxError(f"device: unknown device {name!r} (expected auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MultiboxError(f"device: {name!r} asked for, but no CUDA GPU is available")
    return device


def leave_a_core_free(device: torch.device) -> None:
    """On the CPU, give PyTorch one thread fewer than there are cores; OMP_NUM_THREADS, when set, wins.

    PyTorch's OpenMP threads spin while they wait for each other; when a loader, logger, decoding or drawing
    thread takes a core from them, every op stalls (measured on the 2-core dev machine: 6 s per training step
    with 2 threads, 0.5 s with 1).
    """
    if device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))
