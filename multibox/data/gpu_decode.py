"""``data.decode: gpu``: loader workers only read the encoded files; decoding and augmentation run
on the batch's device after transfer (``DetectionDataModule.on_after_batch_transfer``).

For a GPU whose loader workers cannot keep up with OpenCV decoding and albumentations: JPEGs are
decoded in one batched ``torchvision.io.decode_jpeg(..., device=cuda)`` call (nvJPEG) and the SSD
augmentation runs as ``torchvision.transforms.v2`` on the decoded tensors. Anything else (PNG, BMP,
a JPEG the batched call refuses) is decoded by ``torchvision.io.decode_image`` on the CPU. The
result is the batch dict of :func:`~multibox.data.dataset.collate_detections`, so the module and
loss cannot tell the two paths apart. On a CPU-only machine the same code runs with device="cpu".
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset, get_worker_info
from torchvision import tv_tensors
from torchvision.io import ImageReadMode, decode_image, decode_jpeg, read_file
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from multibox.data.dataset import SkippedSample, collate_detections, invalid_box_reason, warn_skipped
from multibox.data.records import DetectionSet
from multibox.data.transforms import MEAN_RGB, PRESETS

UNREADABLE = "cannot read image (missing, unreadable or not an image)"  # as read_image says it
JPEG_MAGIC = (0xFF, 0xD8, 0xFF)


class EncodedDetectionDataset(Dataset):
    """Items are the record's encoded file and targets in original pixels, or a :class:`SkippedSample`.

    item: ``data`` uint8 (B,) the file's bytes, ``boxes`` float32 (G, 4) xyxy pixels of the stored
    annotation (crowd boxes left out), ``labels`` int64 (G,), ``image_id``, ``orig_size`` (H, W), ``file``.
    Invalid boxes and unreadable files are skipped here, as :class:`DetectionDataset` does with skip_bad.
    """

    def __init__(self, dataset: DetectionSet):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset.records)

    def __getitem__(self, index: int) -> dict[str, Any] | SkippedSample:
        record = self.dataset.records[index]
        keep = ~record.iscrowd
        boxes, labels = record.boxes[keep], record.labels[keep]
        reason = invalid_box_reason(boxes, labels, record.width, record.height, self.dataset.num_classes)
        data = None
        if reason is None:
            try:
                data = read_file(str(record.file))
            except (RuntimeError, OSError):
                reason = UNREADABLE
        if reason is not None:
            skipped = SkippedSample(str(record.file), reason)
            if get_worker_info() is None:  # workers leave the warning to the main process
                warn_skipped(skipped.message, skipped.file)
            return skipped
        return {
            "data": data,
            "boxes": torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.as_tensor(labels, dtype=torch.int64).reshape(-1),
            "image_id": int(record.image_id),
            "orig_size": (int(record.height), int(record.width)),
            "file": str(record.file),
        }


def collate_encoded(batch: list[dict[str, Any] | SkippedSample | None], train: bool) -> dict[str, Any]:
    """Lists of the kept items' fields (images differ in size until decoded); `train` picks the
    augmentation applied after transfer. ``skipped``/``skipped_files`` count what the workers dropped.

    The files' bytes travel as one tensor (``encoded``) cut by ``encoded_sizes``, the targets likewise
    (``target_counts``): a worker shares each
    tensor it returns through its own file descriptor, and one per image ran a 2-core box out of them
    (``OSError: Bad file descriptor``) when a few epochs of batches were alive at once."""
    kept = [item for item in batch if isinstance(item, dict)]
    data = [item["data"] for item in kept]
    skipped = [item.message for item in batch if isinstance(item, SkippedSample)]
    skipped += ["unknown sample: skipped"] * sum(item is None for item in batch)
    return {
        "encoded": torch.cat(data) if data else torch.zeros(0, dtype=torch.uint8),
        "encoded_sizes": torch.tensor([len(d) for d in data], dtype=torch.int64),
        "target_boxes": torch.cat([item["boxes"] for item in kept]) if kept else torch.zeros(0, 4),
        "target_labels": torch.cat([item["labels"] for item in kept]) if kept else torch.zeros(0, dtype=torch.int64),
        "target_counts": torch.tensor([len(item["labels"]) for item in kept], dtype=torch.int64),
        "image_ids": torch.tensor([item["image_id"] for item in kept], dtype=torch.int64),
        "orig_sizes": torch.tensor([item["orig_size"] for item in kept], dtype=torch.int64).reshape(-1, 2),
        "files": [item["file"] for item in kept],
        "train": train,
        "skipped": torch.tensor(len(skipped), dtype=torch.int64),
        "skipped_files": skipped,
    }


def build_gpu_transform(preset: str, input_size: tuple[int, int], train: bool) -> v2.Compose:
    """torchvision v2 counterpart of :func:`~multibox.data.transforms.build_train_transform` (train)
    or of the eval resize: same SSD recipe, ending in a bilinear resize to input_size (H, W) without
    antialiasing (as OpenCV's INTER_LINEAR, so both paths feed the model alike) and the box clean-up.
    """
    if not isinstance(preset, str) or preset not in PRESETS:
        raise ValueError(f"data.decode=gpu takes an augment preset ({', '.join(PRESETS)}), got {preset!r}")
    steps: list[Any] = []
    if train and preset == "ssd":
        steps += [
            v2.RandomPhotometricDistort(p=0.5),
            v2.RandomZoomOut(fill={tv_tensors.Image: MEAN_RGB, "others": 0}, side_range=(1.0, 4.0), p=0.5),
        ]
    if train and preset in ("ssd", "ssdlite"):
        steps += [v2.RandomIoUCrop(), v2.RandomHorizontalFlip(p=0.5)]
    steps += [
        v2.Resize((int(input_size[0]), int(input_size[1])), antialias=False),
        v2.ClampBoundingBoxes(),
        v2.SanitizeBoundingBoxes(min_size=1.0),
    ]
    return v2.Compose(steps)


def decode_images(encoded: list[torch.Tensor], device: torch.device | str) -> list[torch.Tensor | None]:
    """RGB uint8 (3, H, W) per file on `device`, EXIF orientation applied, or None where undecodable.

    JPEGs go through one batched decode_jpeg on `device`; if that call fails (one corrupt file
    fails the whole batch), each JPEG is retried alone. The rest falls back to decode_image on the CPU.
    """
    images: list[torch.Tensor | None] = [None] * len(encoded)
    jpegs = [i for i, data in enumerate(encoded) if _is_jpeg(data)]
    if jpegs:
        try:
            decoded = decode_jpeg(
                [encoded[i].cpu() for i in jpegs], mode=ImageReadMode.RGB, apply_exif_orientation=True, device=device
            )
            for i, image in zip(jpegs, decoded, strict=True):
                images[i] = image
        except RuntimeError:
            for i in jpegs:
                images[i] = _decode_one_jpeg(encoded[i], device)
    for i, data in enumerate(encoded):
        if images[i] is None:
            images[i] = decode_on_cpu(data, orient=True, device=device)
    return images


def _is_jpeg(data: torch.Tensor) -> bool:
    return data.numel() > 3 and tuple(data[:3].tolist()) == JPEG_MAGIC


def _decode_one_jpeg(data: torch.Tensor, device: torch.device | str) -> torch.Tensor | None:
    try:
        return decode_jpeg(data.cpu(), mode=ImageReadMode.RGB, apply_exif_orientation=True, device=device)
    except RuntimeError:
        return None


def decode_on_cpu(data: torch.Tensor, orient: bool, device: torch.device | str) -> torch.Tensor | None:
    """decode_image on the CPU (any format torchvision reads), as 8-bit RGB moved to `device`; None if undecodable."""
    try:
        image = decode_image(data.cpu(), mode=ImageReadMode.RGB, apply_exif_orientation=orient)
    except RuntimeError:
        return None
    if image.dtype != torch.uint8:  # 16-bit PNG
        image = F.to_dtype(image, torch.uint8, scale=True)
    return image.to(device)


def check_size(
    image: torch.Tensor, data: torch.Tensor, expected: tuple[int, int], device: torch.device | str
) -> torch.Tensor | str:
    """The image whose (H, W) matches the annotation's, or the reason it does not (as read_image):
    when only the stored, unrotated pixels match (annotated before EXIF rotation), those are used."""
    if tuple(image.shape[-2:]) == tuple(expected):
        return image
    stored = decode_on_cpu(data, orient=False, device=device)
    if stored is not None and tuple(stored.shape[-2:]) == tuple(expected):
        return stored
    (h, w), (eh, ew) = image.shape[-2:], expected
    return f"image is {w}x{h} but its annotations say {ew}x{eh}"


def decode_batch(
    raw: dict[str, Any], transform: v2.Compose, input_size: tuple[int, int], device: torch.device | str
) -> dict[str, Any]:
    """The :func:`collate_detections` batch of a :func:`collate_encoded` one, decoded and transformed on `device`.

    Undecodable files and wrong sizes become skipped samples (warned once per file, as the CPU path
    does in the main process); the workers' skips are added to ``skipped``/``skipped_files``.
    """
    items: list[tuple[torch.Tensor, dict[str, Any]] | SkippedSample] = []
    encoded = list(torch.split(raw["encoded"], raw["encoded_sizes"].tolist()))
    counts = raw["target_counts"].tolist()
    target_boxes, target_labels = torch.split(raw["target_boxes"], counts), torch.split(raw["target_labels"], counts)
    images = decode_images(encoded, device)
    for index, image in enumerate(images):
        height, width = (int(v) for v in raw["orig_sizes"][index].tolist())
        file, orig_size = raw["files"][index], (height, width)
        checked = check_size(image, encoded[index], orig_size, device) if image is not None else UNREADABLE
        if isinstance(checked, str):
            skipped = SkippedSample(file, checked)
            warn_skipped(skipped.message, skipped.file)
            items.append(skipped)
            continue
        image, boxes, labels = transform_sample(checked, target_boxes[index], target_labels[index], transform)
        scale = boxes.new_tensor([input_size[1], input_size[0], input_size[1], input_size[0]])
        target = {
            "boxes": (boxes / scale).clamp_(0.0, 1.0),
            "labels": labels,
            "image_id": int(raw["image_ids"][index]),
            "orig_size": orig_size,
        }
        items.append((image, target))
    batch = collate_detections(items, input_size=input_size)
    batch["skipped"] = batch["skipped"] + raw["skipped"].cpu()
    batch["skipped_files"] = [*raw["skipped_files"], *batch["skipped_files"]]
    return {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in batch.items()}


def transform_sample(
    image: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor, transform: v2.Compose
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(image uint8 (3, H, W), boxes float32 (G, 4) xyxy pixels, labels (G,)) after `transform`, on image's device."""
    height, width = image.shape[-2:]
    sample = {
        "image": tv_tensors.Image(image),
        "boxes": tv_tensors.BoundingBoxes(
            boxes.to(image.device, torch.float32), format="XYXY", canvas_size=(height, width)
        ),
        "labels": labels.to(image.device),
    }
    out = transform(sample)
    return out["image"].as_subclass(torch.Tensor), out["boxes"].as_subclass(torch.Tensor).float(), out["labels"]
