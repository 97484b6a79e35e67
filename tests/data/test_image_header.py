"""Images are sized from their header before decoding: a 1 MB PNG of 32000x32000 must not take 10 GB
(issue 13, item 7)."""

import struct
import zlib

import cv2
import numpy as np
import pytest

from multibox.data.dataset import read_image
from multibox.errors import MultiboxError


def _png_header_only(path, width: int, height: int) -> None:
    """A PNG whose IHDR says width x height; its pixel data would take gigabytes to decode."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1000)  # far too little data: decoding would fail only after allocating
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def test_a_decompression_bomb_is_refused_from_its_header(tmp_path):
    _png_header_only(tmp_path / "bomb.png", 32000, 32000)
    with pytest.raises(MultiboxError, match=r"1024 MP\), above data.max_image_pixels \(89 MP\); not decoded"):
        read_image(tmp_path / "bomb.png", (32000, 32000))


def test_max_image_pixels_is_the_users_bound(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((48, 64, 3), np.uint8))
    assert read_image(tmp_path / "a.png", (48, 64)).shape == (48, 64, 3)
    with pytest.raises(MultiboxError, match="image is 64x48 .* above data.max_image_pixels"):
        read_image(tmp_path / "a.png", (48, 64), max_pixels=1000)


def test_a_header_that_contradicts_the_annotation_is_not_decoded(tmp_path):
    _png_header_only(tmp_path / "big.png", 12000, 12000)
    with pytest.raises(MultiboxError, match="image is 12000x12000 but its annotations say 64x48; not decoded"):
        read_image(tmp_path / "big.png", (48, 64), max_pixels=None)
