"""Torch dataset over a :class:`DetectionSet`, and the collate function that pads boxes per batch.

Targets carry boxes normalised to [0, 1] of the network input, so the model and the
default-box matcher never need to know the input size or the original image size.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset, get_worker_info

from multibox.data.records import DetectionSet
from multibox.errors import MultiboxError

Transform = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]

_WARNED: set[str] = set()  # files already warned about in this process


@dataclass(frozen=True)
class SkippedSample:
    """Marker item of a sample that could not be used (unreadable image or invalid boxes).

    `collate_detections` drops it and counts it in ``batch["skipped"]``; its message names the file.
    """

    file: str
    reason: str

    @property
    def message(self) -> str:
        return f"{self.file}: skipped, {self.reason}"


def warn_skipped(message: str, file: str | None = None) -> bool:
    """Warn once per file and process that a sample was skipped (`file` defaults to the message's
    leading path, as in :attr:`SkippedSample.message`); True when this call warned."""
    file = file if file is not None else message.split(": skipped, ", 1)[0]
    if file in _WARNED:
        return False
    _WARNED.add(file)
    warnings.warn(message, UserWarning, stacklevel=2)
    return True


def invalid_box_reason(
    boxes: np.ndarray, labels: np.ndarray, width: int, height: int, num_classes: int | None
) -> str | None:
    """Why a record's boxes cannot be trained on, or None: non-finite, empty or fully-outside boxes, bad labels.

    Boxes partly outside the image are fine (they are clipped to it)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    labels = np.asarray(labels).reshape(-1)
    if not len(boxes):
        return None
    if not np.isfinite(boxes).all():
        return "a box has non-finite coordinates"
    if ((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])).any():
        return "a box has zero or negative width/height"
    if ((boxes[:, 2] <= 0) | (boxes[:, 3] <= 0) | (boxes[:, 0] >= width) | (boxes[:, 1] >= height)).any():
        return f"a box lies entirely outside the {width}x{height} image"
    if num_classes is not None and ((labels < 1) | (labels > num_classes)).any():
        return f"a label is outside 1..{num_classes}"
    return None


DEFAULT_MAX_IMAGE_PIXELS = (
    89_478_485  # Pillow's decompression-bomb limit (Image.MAX_IMAGE_PIXELS); data.max_image_pixels
)


def header_size(data: np.ndarray) -> tuple[int, int] | None:
    """(width, height) from an encoded image's header, without decoding its pixels (None: no header PIL knows).
    A 1 MB PNG can hold a 32000x32000 image that decodes to 3 GB: the header tells before any of it is decoded."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data.tobytes())) as image:
                return int(image.size[0]), int(image.size[1])
    except Image.DecompressionBombError as error:  # above twice Pillow's limit: its message holds the pixel count
        found = re.search(r"\((\d+) pixels\)", str(error))
        return (int(found.group(1)), 1) if found else (2 * DEFAULT_MAX_IMAGE_PIXELS + 1, 1)
    except Exception:  # not an image PIL reads: OpenCV decides below
        return None


def read_image(
    path: Path, expected_size: tuple[int, int] | None = None, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS
) -> np.ndarray:
    """RGB uint8 (H, W, 3) as displayed: JPEG EXIF orientation applied, as labelling tools, browsers
    and `multibox predict` show the image. Grayscale, RGBA and 16-bit files become 8-bit RGB.

    Annotations made on the stored pixels (older COCO-style tools) are honoured where the size
    tells: when only the stored, unrotated size matches `expected_size` (H, W), those pixels are used.
    A truncated JPEG or PNG is refused: OpenCV would decode it with the missing part grey and only a
    warning on stderr, and training would learn boxes on pixels that are not there.
    """
    try:
        data = np.fromfile(path, np.uint8)
    except OSError:  # missing, a folder, no permission
        data = np.zeros(0, np.uint8)
    size = header_size(data) if data.size else None
    if size is not None:
        (w, h), pixels = size, size[0] * size[1]
        shown = f"{w}x{h}" if h > 1 else f"{pixels} pixels"
        if max_pixels is not None and pixels > max_pixels:
            raise MultiboxError(
                f"{path}: image is {shown} ({pixels / 1e6:.0f} MP), above data.max_image_pixels "
                f"({max_pixels / 1e6:.0f} MP); not decoded"
            )
        if expected_size is not None and tuple(expected_size) not in ((h, w), (w, h)):
            eh, ew = expected_size
            raise MultiboxError(f"{path}: image is {shown} but its annotations say {ew}x{eh}; not decoded")
    cut = truncation(data) if data.size else None
    if cut:
        raise MultiboxError(f"{path}: cannot read image ({cut})")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise MultiboxError(f"{path}: cannot read image (missing, unreadable or not an image)")
    if expected_size is not None and image.shape[:2] != tuple(expected_size):
        stored = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        if stored is None or stored.shape[:2] != tuple(expected_size):
            (h, w), (eh, ew) = image.shape[:2], expected_size
            raise MultiboxError(f"{path}: image is {w}x{h} but its annotations say {ew}x{eh}")
        image = stored
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def truncation(data: bytes | np.ndarray) -> str | None:
    """Why an encoded JPEG/PNG is cut short, or None: its end marker is missing from the last bytes."""
    head, tail = bytes(data[:8]), bytes(data[-1024:])
    if head[:3] == b"\xff\xd8\xff":
        if b"\xff\xd9" not in tail.rstrip(b"\x00\r\n \t"):
            return "truncated JPEG (no end-of-image marker)"
    elif head == b"\x89PNG\r\n\x1a\n":
        if b"IEND" not in tail[-32:]:
            return "truncated PNG (no IEND chunk)"
    return None


class DetectionDataset(Dataset):
    """Items are (image uint8 (3, H, W), target dict); crowd boxes are left out of the targets.

    target: ``boxes`` float32 (G, 4) xyxy in [0, 1] of the input, ``labels`` int64 (G,),
    ``image_id`` int and ``orig_size`` (height, width) of the original image.
    """

    def __init__(
        self,
        dataset: DetectionSet,
        transform: Transform,
        input_size: tuple[int, int],
        skip_bad: bool = False,
        max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
    ):
        """`skip_bad`: an unreadable image or invalid boxes give a :class:`SkippedSample` (warned once
        per file) instead of raising, for `collate_detections` to drop and count. `max_pixels`: larger
        images (by their header) are refused undecoded."""
        self.max_pixels = max_pixels
        self.dataset = dataset
        self.transform = transform
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.skip_bad = bool(skip_bad)
        self._seeded_pid: int | None = None

    def __len__(self) -> int:
        return len(self.dataset.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]] | SkippedSample:
        self._seed_process()
        record = self.dataset.records[index]
        keep = ~record.iscrowd
        if not self.skip_bad:
            image = read_image(record.file, (record.height, record.width), self.max_pixels)
            image, boxes, labels = self.transform(image, record.boxes[keep], record.labels[keep])
        else:
            reason = invalid_box_reason(
                record.boxes[keep], record.labels[keep], record.width, record.height, self.dataset.num_classes
            )
            try:
                if reason is None:
                    image = read_image(record.file, (record.height, record.width), self.max_pixels)
                    image, boxes, labels = self.transform(image, record.boxes[keep], record.labels[keep])
            except MultiboxError as error:
                reason = str(error).split(": ", 1)[-1] if str(error).startswith(str(record.file)) else str(error)
            except ValueError as error:  # the augmentation refused the boxes
                reason = f"invalid boxes ({str(error).splitlines()[0] if str(error) else type(error).__name__})"
            if reason is not None:
                skipped = SkippedSample(str(record.file), reason)
                if get_worker_info() is None:  # workers leave the warning to the main process (see collate)
                    warn_skipped(skipped.message, skipped.file)
                return skipped
        height, width = image.shape[:2]
        if (height, width) != self.input_size:
            raise ValueError(f"transform returned a {height}x{width} image, expected {self.input_size}")
        scale = np.array([width, height, width, height], np.float32)
        boxes = np.clip(np.asarray(boxes, np.float32).reshape(-1, 4) / scale, 0.0, 1.0)
        target = {
            "boxes": torch.from_numpy(boxes),
            "labels": torch.from_numpy(np.asarray(labels, np.int64).reshape(-1)),
            "image_id": int(record.image_id),
            "orig_size": (int(record.height), int(record.width)),
        }
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))), target

    def _seed_process(self) -> None:
        """Give each process (main or loader worker) its own augmentation stream, from torch's seed.

        Forked workers would otherwise inherit identical random states and augment alike;
        torch's per-worker seed also makes runs repeatable under a fixed global seed.
        """
        if self._seeded_pid == os.getpid():
            return
        self._seeded_pid = os.getpid()
        # Workers are the parallelism, but cv2.setNumThreads(1) must not be called here: in a forked
        # worker it deadlocks when the parent's OpenCV thread pool has run (it joins threads the child
        # does not have). The data module sets it in the parent before its workers start instead.
        reseed = getattr(self.transform, "reseed", None)
        if callable(reseed):
            seed = torch.initial_seed()
            if get_worker_info() is None:  # the main process (num_workers=0): same seed on every DDP rank
                seed += 1_000_003 * _distributed_rank()  # workers get rank-aware seeds from Lightning
            reseed(seed % 2**63)


def _distributed_rank() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return int(os.environ.get("RANK", 0))


def collate_detections(
    batch: Sequence[tuple[torch.Tensor, dict[str, Any]] | SkippedSample | None],
    input_size: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Stack images and zero-pad boxes/labels to the batch's most boxes (at least 1; label 0 = padding).

    Skipped samples (:class:`SkippedSample` or None) are dropped: ``skipped`` is their count (int64
    scalar tensor) and ``skipped_files`` their messages. When every sample was skipped the batch
    holds no images: (0, 3, H, W) with H, W from `input_size` (0 when not given).
    """
    kept = [item for item in batch if item is not None and not isinstance(item, SkippedSample)]
    skipped = [item.message for item in batch if isinstance(item, SkippedSample)]
    skipped += ["unknown sample: skipped"] * sum(item is None for item in batch)
    if not kept:
        height, width = input_size if input_size is not None else (0, 0)
        return {
            "images": torch.zeros((0, 3, int(height), int(width)), dtype=torch.uint8),
            "boxes": torch.zeros((0, 1, 4)),
            "labels": torch.zeros((0, 1), dtype=torch.int64),
            "image_ids": torch.zeros(0, dtype=torch.int64),
            "orig_sizes": torch.zeros((0, 2), dtype=torch.int64),
            "skipped": torch.tensor(len(skipped), dtype=torch.int64),
            "skipped_files": skipped,
        }
    images, targets = zip(*kept, strict=True)
    boxes = pad_sequence([t["boxes"].reshape(-1, 4) for t in targets], batch_first=True)
    labels = pad_sequence([t["labels"].reshape(-1) for t in targets], batch_first=True)
    if boxes.shape[1] == 0:
        boxes, labels = boxes.new_zeros(len(kept), 1, 4), labels.new_zeros(len(kept), 1)
    return {
        "images": torch.stack(images),
        "boxes": boxes.float(),
        "labels": labels.long(),
        "image_ids": torch.tensor([t["image_id"] for t in targets], dtype=torch.int64),
        "orig_sizes": torch.tensor([t["orig_size"] for t in targets], dtype=torch.int64).reshape(-1, 2),
        "skipped": torch.tensor(len(skipped), dtype=torch.int64),
        "skipped_files": skipped,
    }


def images_to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) batches travel to the device as bytes and become [0, 1] floats there."""
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images
