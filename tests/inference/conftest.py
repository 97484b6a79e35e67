"""Detectors built from the shared tiny checkpoint (tests/conftest.py), one load for many option sets."""

from __future__ import annotations

import copy

import pytest

from multibox.engine.checkpoint import load_checkpoint
from multibox.inference.api import Detector


@pytest.fixture(scope="session")
def make_detector(tiny_checkpoint):
    """Detector(**options) on a copy of the checkpoint's network: one load for many option sets."""
    loaded = load_checkpoint(tiny_checkpoint)

    def make(**options) -> Detector:
        return Detector(
            copy.deepcopy(loaded.detector),
            tuple(loaded.config.data.input_size),
            loaded.class_names,
            loaded.category_ids,
            **{"device": "cpu", **options},
        )

    return make
