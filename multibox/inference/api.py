"""The Python inference API: ``Detector.from_checkpoint(path)(images)`` → boxes, scores, names.

Images go through the evaluation transform (a plain resize to the model's input size), so
predictions equal what ``multibox eval`` scored; boxes come back in each image's own pixels.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from multibox.boxes.postprocess import PostprocessSettings
from multibox.data.transforms import build_eval_transform
from multibox.devices import resolve_device
from multibox.engine.checkpoint import load_checkpoint
from multibox.engine.sliced import DEFAULT_MERGE, Merge, Slicing, check_slicing, detect_sliced, frame_tensor
from multibox.errors import MultiboxError
from multibox.models.detector import SSDDetector

SCORE_DECIMALS = 5  # as multibox.metrics.coco.DetectionAccumulator.results rounds scores

ImageInput = str | Path | np.ndarray | Image.Image | torch.Tensor


@dataclass(frozen=True)
class Detections:
    """One image's detections, best first.

    boxes (K, 4) xyxy float32 in the image's original pixels; scores (K,); labels (K,) 0-based
    class index into ``Detector.class_names``; names the class name of each box; category_ids
    the dataset's own category id of each box (what COCO results carry); image_size (height, width).
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    names: list[str]
    category_ids: np.ndarray
    image_size: tuple[int, int]

    def __len__(self) -> int:
        return len(self.scores)

    def to_coco(self, image_id: int, file_name: str | None = None) -> list[dict[str, Any]]:
        """COCO results entries: ``bbox`` is [x, y, w, h] in original pixels, ``category_id`` the dataset's id.
        Rounded as evaluation rounds them (DetectionAccumulator.results), so predict and eval JSON agree."""
        boxes = self.boxes.astype(np.float64)  # float32 would print 1.2300000190734863 for 1.23
        xywh = np.concatenate((boxes[:, :2], boxes[:, 2:] - boxes[:, :2]), axis=1).round(2)
        named = {} if file_name is None else {"file_name": file_name}
        return [
            {
                "image_id": int(image_id),
                **named,
                "category_id": int(c),
                "bbox": [float(v) for v in b],
                "score": round(float(s), SCORE_DECIMALS),
            }
            for b, c, s in zip(xywh, self.category_ids, self.scores, strict=True)
        ]

    def to_yolo(self) -> str:
        """One line per box: ``class cx cy w h score``, class 0-based, coordinates normalised to the image."""
        height, width = self.image_size
        b = self.boxes.astype(np.float64)
        centre = ((b[:, 0] + b[:, 2]) / 2 / width, (b[:, 1] + b[:, 3]) / 2 / height)
        size = ((b[:, 2] - b[:, 0]) / width, (b[:, 3] - b[:, 1]) / height)
        return "".join(
            f"{int(c)} {x:.6f} {y:.6f} {w:.6f} {h:.6f} {float(s):.4f}\n"
            for c, x, y, w, h, s in zip(self.labels, *centre, *size, self.scores, strict=True)
        )


def read_rgb(path: str | Path) -> np.ndarray | None:
    """The training reader (:func:`multibox.data.dataset.read_image`: EXIF orientation applied, cut-short JPEG/PNG
    refused), lenient: None instead of an error, for prediction, which reports and skips such files."""
    from multibox.data.dataset import read_image

    try:
        return read_image(Path(path), max_pixels=None)
    except MultiboxError:
        return None


def to_rgb(image: ImageInput) -> np.ndarray:
    """Any accepted input as an HxWx3 uint8 RGB array (see ``Detector.__call__``)."""
    if isinstance(image, (str, Path)):
        if not Path(image).is_file():
            raise MultiboxError(f"{image}: image not found")
        rgb = read_rgb(image)
        if rgb is None:
            raise MultiboxError(f"{image}: cannot read image (truncated, or not a format OpenCV decodes)")
        return rgb
    if isinstance(image, Image.Image):
        return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    if isinstance(image, torch.Tensor):
        if image.ndim == 2 or (image.ndim == 3 and image.shape[0] == 1):  # grayscale, as a grayscale file is read
            image = image.reshape(1, *image.shape[-2:]).expand(3, -1, -1)
        if image.ndim != 3 or image.shape[0] != 3:
            raise MultiboxError(f"image tensor: expected shape (3, H, W), got {tuple(image.shape)}")
        if image.dtype != torch.uint8:
            if not image.is_floating_point() or image.min() < 0 or image.max() > 1:
                raise MultiboxError(f"image tensor: expected uint8 or float in [0, 1], got {image.dtype}")
            image = image.float().mul(255).round().to(torch.uint8)
        return image.permute(1, 2, 0).cpu().numpy()
    if isinstance(image, np.ndarray):
        if image.dtype == np.uint8 and (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 4))):
            # grayscale (H, W) or (H, W, 1), or RGBA: converted as reading a file of the same image converts it
            image = (
                np.repeat(image.reshape(*image.shape[:2], 1), 3, axis=2)
                if image.ndim == 2 or image.shape[2] == 1
                else np.ascontiguousarray(image[..., :3])
            )
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise MultiboxError(f"image array: expected HxWx3 uint8 RGB, got shape {image.shape} dtype {image.dtype}")
        return image
    raise MultiboxError(f"image: expected a path, numpy array, PIL image or tensor, got {type(image).__name__}")


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise MultiboxError(f"{name}: must be in [{low:g}, {high:g}], got {value:g}")


class Detector:
    """A checkpoint's SSD ready for images: ``Detector.from_checkpoint("best.ckpt")(["a.jpg", array])``.

    ``conf`` is the lowest score kept (also the pre-NMS threshold, which only saves work: a box
    below it can neither survive nor suppress one above it); ``iou`` the NMS threshold and
    ``max_det`` the detections kept per image (both default to the checkpoint's eval settings);
    ``classes`` keeps only these classes (names, or 0-based indices as in ``Detections.labels``);
    ``half`` runs the network in fp16, on CUDA only (on the CPU it is refused: fp16 convolutions
    there are slow or missing). Boxes are decoded and filtered in fp32 either way. The Detector
    takes over `network` (its postprocess settings are replaced), so pass a fresh one.
    ``tile`` (H, W) slices each image into tiles overlapping by ``overlap``, run in batches of
    ``batch_size`` tiles and merged by ``merge`` (nms or merge); ``full_frame`` adds a downscaled
    pass of the whole image (see :mod:`multibox.engine.sliced`).
    """

    def __init__(
        self,
        network: SSDDetector,
        input_size: tuple[int, int],
        class_names: Sequence[str],
        category_ids: Sequence[int],
        *,
        device: str = "auto",
        conf: float = 0.3,
        iou: float | None = None,
        max_det: int | None = None,
        classes: Iterable[str | int] | None = None,
        half: bool = False,
        batch_size: int = 8,
        tile: tuple[int, int] | None = None,
        overlap: float = 0.2,
        full_frame: bool = False,
        merge: Merge = DEFAULT_MERGE,
    ) -> None:
        self.class_names = list(class_names)
        self.category_ids = np.asarray(category_ids, dtype=np.int64)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.device = resolve_device(device)
        if half and self.device.type != "cuda":
            raise MultiboxError(
                f"half: fp16 inference needs a CUDA device, got {self.device} (leave --half out on the CPU)"
            )
        self.dtype = torch.float16 if half else torch.float32
        self.conf = float(conf)
        _check_range("conf", self.conf, 0.0, 1.0)
        self.max_det = network.settings.max_detections if max_det is None else int(max_det)
        for name, value in (("max_det", self.max_det), ("batch_size", batch_size)):
            if value < 1:
                raise MultiboxError(f"{name}: must be at least 1, got {value}")
        self.batch_size = int(batch_size)
        self.class_filter = None if classes is None else self._class_indices(classes)
        network.settings = self._postprocess_settings(network.settings, iou)
        self.network = network.eval().to(self.device)
        self.network.model.to(self.dtype)  # the default boxes stay fp32
        self._transform = build_eval_transform(self.input_size)
        self.slicing = (
            None
            if tile is None
            else check_slicing(Slicing((tile[0], tile[1]), overlap, full_frame, merge), self.network, self.input_size)
        )

    def _postprocess_settings(self, settings: PostprocessSettings, iou: float | None) -> PostprocessSettings:
        """The checkpoint's settings with conf as the pre-NMS threshold, and iou and max_det applied.

        With a class filter NMS keeps everything and the cap comes after filtering, so other classes
        cannot take the max_det places. The threshold sits one float32 step below conf because
        postprocess keeps scores strictly above it, and conf itself is kept.
        """
        iou = settings.nms_threshold if iou is None else float(iou)
        _check_range("iou", iou, 0.0, 1.0)
        cap = self.max_det if self.class_filter is None else settings.topk_candidates * len(self.class_names)
        pre_nms = float(np.nextafter(np.float32(self.conf), np.float32(0))) if self.conf > 0 else 0.0
        return replace(settings, score_threshold=pre_nms, nms_threshold=iou, max_detections=cap)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto", **options: Any) -> Detector:
        """Rebuild a training checkpoint's detector; `options` as in the class docstring."""
        loaded = load_checkpoint(path)
        return cls(
            loaded.detector,
            loaded.config.data.input_size,
            loaded.class_names,
            loaded.category_ids,
            device=device,
            **options,
        )

    def _class_indices(self, classes: Iterable[str | int]) -> np.ndarray:
        """0-based indices of classes given by name or index; names win over digit strings."""
        indices = []
        for item in classes:
            if isinstance(item, str) and item in self.class_names:
                indices.append(self.class_names.index(item))
            elif str(item).strip().isdigit() and int(item) < len(self.class_names):
                indices.append(int(item))
            else:
                raise MultiboxError(
                    f"classes: unknown class {item!r} "
                    f"(names: {', '.join(self.class_names)}; or 0..{len(self.class_names) - 1})"
                )
        return np.array(sorted(set(indices)), dtype=np.int64)

    def __call__(self, images: ImageInput | Sequence[ImageInput], batch_size: int | None = None) -> list[Detections]:
        """Detections for each image, in order; always a list (one entry for a single image).

        An image is a path (read with OpenCV, JPEG EXIF orientation applied), an HxWx3 uint8 RGB
        numpy array (RGB, not OpenCV's BGR), a PIL image (EXIF orientation applied, converted to
        RGB) or a (3, H, W) tensor, uint8 or float in [0, 1]; a grayscale (H, W) array or tensor, (H, W, 1) array
        or RGBA array is converted to RGB; (N, H, W, 3) arrays and (N, 3, H, W) tensors are batches.
        """
        single = isinstance(images, (str, Path, Image.Image)) or (
            isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim in (2, 3)
        )
        items: list[ImageInput] = [images] if single else list(images)  # type: ignore[list-item,arg-type,list-item]
        size = batch_size or self.batch_size
        results: list[Detections] = []
        for start in range(0, len(items), size):
            results += self.detect_rgb([to_rgb(item) for item in items[start : start + size]])
        return results

    @torch.inference_mode()
    def detect_rgb(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """One batch of HxWx3 uint8 RGB arrays (any sizes) through resize, network and postprocess."""
        if not images:
            return []
        if self.slicing is not None:
            frames = [frame_tensor(image, self.device) for image in images]
            found = detect_sliced(self.network, frames, self.input_size, self.slicing, self.batch_size, self.dtype)
            return [self._detections(d, image.shape[:2]) for d, image in zip(found, images, strict=True)]
        no_boxes, no_labels = np.zeros((0, 4), np.float32), np.zeros((0,), np.int64)
        resized = np.stack([self._transform(image, no_boxes, no_labels)[0] for image in images])
        batch = torch.from_numpy(resized).to(self.device).permute(0, 3, 1, 2).to(self.dtype).div_(255.0)
        sizes = torch.tensor([image.shape[:2] for image in images], device=self.device)
        box_regression, cls_logits = self.network(batch)
        found = self.network.postprocess(box_regression.float(), cls_logits.float(), sizes)
        return [self._detections(d, image.shape[:2]) for d, image in zip(found, images, strict=True)]

    def _detections(self, found: dict[str, torch.Tensor], image_size: tuple[int, int]) -> Detections:
        boxes, scores = found["boxes"].cpu().numpy(), found["scores"].cpu().numpy()
        labels = found["labels"].cpu().numpy() - 1  # the network's class 0 is background
        keep = scores >= self.conf
        if self.class_filter is not None:
            keep &= np.isin(labels, self.class_filter)
        kept = np.flatnonzero(keep)[: self.max_det]  # best first already
        boxes, scores, labels = boxes[kept], scores[kept], labels[kept]
        return Detections(
            boxes,
            scores,
            labels,
            [self.class_names[i] for i in labels],
            self.category_ids[labels],
            (int(image_size[0]), int(image_size[1])),
        )
