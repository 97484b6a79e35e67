"""Video in and out through OpenCV (its bundled FFmpeg): frames in RGB batches, an annotated copy out.

The installed opencv-python-headless writes MPEG-4 Part 2 (``mp4v``) into .mp4/.m4v/.mov and
Motion JPEG into .avi/.mkv; its H.264 encoder needs hardware it does not find, so it is not used.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from multibox.errors import MultiboxError

VIDEO_FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}
DEFAULT_FPS = 25.0  # when the container does not say


def is_video(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in VIDEO_FOURCC


class VideoReader:
    """Frames of a video file as RGB uint8 arrays, in batches; a file OpenCV cannot open is a one-line error."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.capture = cv2.VideoCapture(str(self.path))
        if not self.capture.isOpened():
            raise MultiboxError(f"{self.path}: cannot open video (not a file OpenCV's FFmpeg decodes)")
        fps = self.capture.get(cv2.CAP_PROP_FPS)
        self.fps = fps if math.isfinite(fps) and fps > 0 else DEFAULT_FPS
        count = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.frame_count = count if count > 0 else None  # a container's estimate; None when unknown

    def batches(self, batch_size: int) -> Iterator[list[np.ndarray]]:
        batch: list[np.ndarray] = []
        while True:
            ok, frame = self.capture.read()
            if not ok:
                break
            batch.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            if len(batch) == batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    def close(self) -> None:
        self.capture.release()


class VideoWriter:
    """An RGB frame sink with the codec picked from the file suffix; opened at the first frame's size."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path, self.fps = Path(path), fps
        fourcc = VIDEO_FOURCC.get(self.path.suffix.lower())
        if fourcc is None:
            raise MultiboxError(
                f"{self.path}: cannot write video with suffix {self.path.suffix!r} (use {', '.join(VIDEO_FOURCC)})"
            )
        self.fourcc = fourcc
        self.writer: cv2.VideoWriter | None = None

    def write(self, rgb: np.ndarray) -> None:
        if self.writer is None:
            height, width = rgb.shape[:2]
            self.writer = cv2.VideoWriter(
                str(self.path), cv2.VideoWriter.fourcc(*self.fourcc), self.fps, (width, height)
            )
            if not self.writer.isOpened():
                raise MultiboxError(
                    f"{self.path}: OpenCV cannot write a {self.path.suffix} video with codec {self.fourcc}"
                )
        self.writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
