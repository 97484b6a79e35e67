"""Fixtures of the data tests: a small synthetic COCO dataset and COCO-file writers."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from multibox.data.synth import make_synthetic_dataset


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 synthetic images of 96x128 (H x W), written once per session; treat as read-only."""
    return make_synthetic_dataset(tmp_path_factory.mktemp("synth") / "shapes", num_images=10, size=(96, 128), seed=3)


@pytest.fixture
def write_coco(tmp_path: Path) -> Callable[[Any], Path]:
    """Write a COCO dict (or raw text) to tmp_path/ann.json and return the path."""

    def write(content: Any, name: str = "ann.json") -> Path:
        path = tmp_path / name
        path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
        return path

    return write
