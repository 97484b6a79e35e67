"""multibox: train, evaluate and deploy SSD object detectors."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Detector", "Detections", "__version__"]

if TYPE_CHECKING:
    from multibox.inference.api import Detections, Detector


def __getattr__(name: str) -> Any:
    """``multibox.Detector`` imports torch on first use only, so ``import multibox`` and the CLI stay fast."""
    if name in ("Detector", "Detections"):
        from multibox.inference import api

        return getattr(api, name)
    raise AttributeError(f"module 'multibox' has no attribute {name!r}")
