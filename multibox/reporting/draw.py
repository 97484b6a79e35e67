"""Drawing detections onto images with OpenCV, and saving them.

Colours come from the class (its index, or a checksum of its name), never from the
detection's position in the list, so a class looks the same in every image.
"""

from __future__ import annotations

import colorsys
import zlib
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from multibox.errors import MultiboxError

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_GOLDEN = 0.618033988749895  # hue step: consecutive classes get well-separated hues


def class_color(key: int | str) -> tuple[int, int, int]:
    """A bright RGB colour fixed by a class index or name (crc32, not Python's salted hash)."""
    index = key if isinstance(key, (int, np.integer)) else zlib.crc32(str(key).encode("utf-8"))
    hue = (int(index) * _GOLDEN) % 1.0
    value = 0.95 if int(index) % 2 == 0 else 0.75  # alternate brightness for neighbouring hues
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, value)
    return int(r * 255), int(g * 255), int(b * 255)


def _text_color(background: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black on light label backgrounds, white on dark ones."""
    r, g, b = background
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)


def _style(height: int, width: int, thickness: int | None) -> tuple[int, float, int]:
    """Box thickness, font scale and font thickness for an image of this size."""
    side = min(height, width)
    line = thickness if thickness is not None else max(1, round(side / 320))
    font_scale = float(np.clip(side / 900, 0.25, 1.5))  # label height follows the image (about 6 px at 0.25)
    return max(1, int(line)), font_scale, max(1, line // 2)


def draw_detections(
    image: np.ndarray,
    boxes: np.ndarray,
    labels: Sequence[str] | np.ndarray,
    scores: np.ndarray | None = None,
    color_key: np.ndarray | None = None,
    thickness: int | None = None,
) -> np.ndarray:
    """A copy of `image` (HxWx3 uint8 RGB) with xyxy pixel `boxes` outlined and labelled.

    Labels read ``"name 0.87"`` (name only without `scores`) on a filled box of the class
    colour, kept inside the image; with `scores` the highest-scoring label is drawn on top.
    `color_key` (one int per box, e.g. the class index) picks colours; without it the label text does.
    The input is never modified.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"draw_detections: expected an HxWx3 uint8 image, got shape {image.shape} dtype {image.dtype}")
    canvas = np.ascontiguousarray(image).copy()
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    names = [str(label) for label in labels]
    if len(names) != len(boxes) or (scores is not None and len(scores) != len(boxes)):
        raise ValueError(
            f"draw_detections: {len(boxes)} boxes but {len(names)} labels"
            + ("" if scores is None else f" and {len(scores)} scores")
        )
    if len(boxes) == 0:
        return canvas

    height, width = canvas.shape[:2]
    line, font_scale, font_thickness = _style(height, width, thickness)
    corners = np.round(boxes).astype(np.int64)
    corners[:, [0, 2]] = corners[:, [0, 2]].clip(0, width - 1)
    corners[:, [1, 3]] = corners[:, [1, 3]].clip(0, height - 1)
    keys = [int(k) for k in np.asarray(color_key).reshape(-1)] if color_key is not None else names
    colors = [class_color(key) for key in keys]

    for (x1, y1, x2, y2), color in zip(corners.tolist(), colors, strict=True):
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, line, cv2.LINE_8)
    # Labels after all outlines, so no outline crosses a label; weakest first, so the best detection's label is
    # drawn last and stays readable where labels overlap.
    order = np.argsort(np.asarray(scores, np.float64), kind="stable") if scores is not None else range(len(corners))
    for i in (int(j) for j in order):
        (x1, y1, x2, y2), color = corners[i].tolist(), colors[i]
        text = names[i] if scores is None else f"{names[i]} {float(scores[i]):.2f}"
        _draw_label(canvas, text, x1, y1, color, font_scale, font_thickness)
    return canvas


def _draw_label(
    canvas: np.ndarray, text: str, x: int, y: int, color: tuple[int, int, int], font_scale: float, font_thickness: int
) -> None:
    """Filled label box above (x, y), or just below it when the box touches the top edge."""
    height, width = canvas.shape[:2]
    (text_w, text_h), baseline = cv2.getTextSize(text, _FONT, font_scale, font_thickness)
    pad = max(1, font_thickness)
    label_w, label_h = text_w + 2 * pad, text_h + baseline + 2 * pad
    left = int(np.clip(x, 0, max(0, width - label_w)))
    top = y - label_h if y - label_h >= 0 else y
    top = int(np.clip(top, 0, max(0, height - label_h)))
    cv2.rectangle(canvas, (left, top), (left + label_w - 1, top + label_h - 1), color, cv2.FILLED)
    origin = (left + pad, top + pad + text_h)
    cv2.putText(canvas, text, origin, _FONT, font_scale, _text_color(color), font_thickness, cv2.LINE_AA)


def save_image(path: str | Path, rgb: np.ndarray) -> None:
    """Write an RGB image (format from the extension); failures become one-line MultiboxErrors."""
    path = Path(path)
    ext = path.suffix.lower() or ".png"
    try:
        ok, encoded = cv2.imencode(ext, cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
    except cv2.error:
        ok = False
    if not ok:
        raise MultiboxError(f"{path}: cannot encode image as {ext!r} (use .jpg or .png)")
    if not path.parent.is_dir():
        raise MultiboxError(f"{path}: cannot write image: folder {path.parent} does not exist")
    try:
        path.write_bytes(encoded.tobytes())
    except OSError as error:
        raise MultiboxError(f"{path}: cannot write image: {error.strerror or error}") from None
