"""Training and evaluation transforms: albumentations pipelines with an (image, boxes, labels) call.

The presets follow torchvision's detection reference (which follows the SSD paper):
``ssd`` = photometric distortion, zoom out, IoU crop, horizontal flip, resize;
``ssdlite`` = IoU crop, flip, resize; ``none`` = resize. Albumentations has no SSD
zoom-out or IoU crop, so those two are small DualTransforms built on its Pad and BaseCrop.
"""

from __future__ import annotations

import inspect
import random
import re
import warnings
from collections.abc import Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np
from albumentations.augmentations.crops.transforms import BaseCrop
from albumentations.core.bbox_utils import denormalize_bboxes
from albumentations.core.transforms_interface import BaseTransformInitSchema
from pydantic import Field

from multibox.data.iou import iou_matrix

MEAN_RGB = (123, 117, 104)  # ImageNet mean; fills the zoom-out canvas
PRESETS = ("ssd", "ssdlite", "none")


class ZoomOut(A.Pad):
    """SSD "expand": place the image at a random spot of a canvas up to `max_scale` times larger."""

    class InitSchema(BaseTransformInitSchema):
        max_scale: float = Field(ge=1.0)
        fill: tuple[float, ...] | float

    def __init__(self, max_scale: float = 4.0, fill: tuple[float, ...] | float = MEAN_RGB, p: float = 0.5):
        super().__init__(fill=fill, border_mode=cv2.BORDER_CONSTANT, p=p)
        self.max_scale = max_scale

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        scale = self.py_random.uniform(1.0, self.max_scale)
        canvas_w, canvas_h = int(width * scale), int(height * scale)
        left = int((canvas_w - width) * self.py_random.random())
        top = int((canvas_h - height) * self.py_random.random())
        return {
            "pad_top": top,
            "pad_bottom": canvas_h - height - top,
            "pad_left": left,
            "pad_right": canvas_w - width - left,
        }


class IoUCrop(BaseCrop):
    """SSD paper's random crop: a patch whose IoU with some box is at least a sampled minimum.

    The minimum is drawn from `min_ious` (None keeps the whole image); patches have a side
    scale in [min_scale, max_scale] and an aspect ratio in [min_aspect, max_aspect]. Boxes
    whose centre is outside the patch are dropped; the rest are clipped to it.
    """

    class InitSchema(BaseTransformInitSchema):
        min_scale: float = Field(gt=0.0, le=1.0)
        max_scale: float = Field(gt=0.0, le=1.0)
        min_aspect: float = Field(gt=0.0)
        max_aspect: float = Field(gt=0.0)
        min_ious: tuple[float | None, ...]
        trials: int = Field(ge=1)

    def __init__(
        self,
        min_scale: float = 0.3,
        max_scale: float = 1.0,
        min_aspect: float = 0.5,
        max_aspect: float = 2.0,
        min_ious: Sequence[float | None] = (None, 0.0, 0.1, 0.3, 0.5, 0.7, 0.9),
        trials: int = 40,
        p: float = 1.0,
    ):
        super().__init__(p=p)
        self.min_scale, self.max_scale = min_scale, max_scale
        self.min_aspect, self.max_aspect = min_aspect, max_aspect
        self.min_ious, self.trials = tuple(min_ious), trials

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        boxes = denormalize_bboxes(np.asarray(data.get("bboxes", np.zeros((0, 4))))[:, :4], (height, width))
        crop = None
        if len(boxes):
            for _ in range(50):  # torchvision loops until a crop is found; cap it, then keep the image
                min_iou = self.min_ious[int(self.random_generator.integers(len(self.min_ious)))]
                if min_iou is None:
                    break
                crop = self._sample(height, width, boxes, min_iou)
                if crop is not None:
                    break
        crop = crop if crop is not None else np.array([0, 0, width, height])
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        keep = np.all((centres > crop[:2]) & (centres < crop[2:]), axis=1)
        return {"crop_coords": tuple(int(v) for v in crop), "keep": keep}

    def _sample(self, height: int, width: int, boxes: np.ndarray, min_iou: float) -> np.ndarray | None:
        """First of `trials` random patches (drawn at once) that meets the constraints, or None."""
        scale = self.random_generator.uniform(self.min_scale, self.max_scale, size=(self.trials, 2))
        size = (scale * [width, height]).astype(np.int64)
        offset = ((np.array([width, height]) - size) * self.random_generator.random((self.trials, 2))).astype(np.int64)
        crops = np.concatenate([offset, offset + size], axis=1)  # (T, 4) xyxy
        aspect = size[:, 0] / np.maximum(size[:, 1], 1)
        ok = (aspect >= self.min_aspect) & (aspect <= self.max_aspect) & np.all(size > 0, axis=1)
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        inside = np.all((centres[None] > crops[:, None, :2]) & (centres[None] < crops[:, None, 2:]), axis=2)  # (T, G)
        ok &= inside.any(axis=1) & ((iou_matrix(crops, boxes) * inside).max(axis=1) >= min_iou)
        return crops[np.argmax(ok)] if ok.any() else None

    def apply_to_bboxes(
        self, bboxes: np.ndarray, crop_coords: tuple[int, int, int, int], keep: np.ndarray, **params: Any
    ) -> np.ndarray:
        cropped = super().apply_to_bboxes(bboxes[keep], crop_coords, **params)
        cropped[:, :4] = np.clip(
            cropped[:, :4], 0.0, 1.0
        )  # clipped now, so later steps (shifts, pads) move only what is visible
        return cropped


def photometric_distort(p: float = 1.0) -> A.BaseCompose:
    """torchvision's RandomPhotometricDistort: each change with p=0.5, contrast first or last (the whole with p)."""

    def jitter(**kwargs: Any) -> A.ColorJitter:
        ranges = {"brightness": (1.0, 1.0), "contrast": (1.0, 1.0), "saturation": (1.0, 1.0), "hue": (0.0, 0.0)}
        return A.ColorJitter(**(ranges | kwargs), p=0.5)

    def contrast() -> A.ColorJitter:
        return jitter(contrast=(0.5, 1.5))

    saturation_hue = [jitter(saturation=(0.5, 1.5)), jitter(hue=(-0.05, 0.05))]
    return A.Sequential(
        [
            jitter(brightness=(0.875, 1.125)),
            A.OneOf(
                [
                    A.Sequential([contrast(), *saturation_hue], p=1.0),
                    A.Sequential([*saturation_hue, contrast()], p=1.0),
                ],
                p=1.0,
            ),
            A.ChannelShuffle(p=0.5),
        ],
        p=p,
    )


class DetectionTransform:
    """An albumentations pipeline called as (image, boxes, labels) -> (image, boxes, labels).

    Boxes are xyxy pixels in and out; boxes clipped to the output and narrower or lower than
    one output pixel are dropped with their labels.
    """

    def __init__(self, transforms: list[Any], seed: int | None = None, check_each_transform: bool = False):
        bbox_params = A.BboxParams(
            format="pascal_voc",
            label_fields=["labels"],
            min_width=1.0,
            min_height=1.0,
            clip=True,
            filter_invalid_bboxes=True,
            check_each_transform=check_each_transform,
        )
        with warnings.catch_warnings():  # a pipeline of image-only steps (a calibration probe, brightness) is fine:
            warnings.filterwarnings("ignore", message="Got processor for bboxes, but no transform to process it")
            self.compose = A.Compose(transforms, bbox_params=bbox_params)
        self.reseed(seed)

    def reseed(self, seed: int | None) -> None:
        """One shared random stream for all steps (albumentations would give each step a copy of the seed)."""
        self.compose.set_random_state(np.random.default_rng(seed), random.Random(seed))

    def __call__(
        self, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        out = self.compose(image=image, bboxes=boxes, labels=np.asarray(labels, np.int64).reshape(-1))
        return (
            out["image"],
            np.asarray(out["bboxes"], np.float32).reshape(-1, 4),
            np.asarray(out["labels"], np.int64).reshape(-1),
        )


def build_train_transform(
    preset: str | Sequence[dict[str, Any]], input_size: tuple[int, int], seed: int | None = None
) -> DetectionTransform:
    """Training augmentation `preset` ending in a resize to input_size (H, W).

    `preset` is "ssd", "ssdlite" or "none", or a list of {name: Transform, **args}.
    """
    if not isinstance(preset, str):
        # Arbitrary steps (a crop, then a shift) need boxes clipped to the image after each step.
        return DetectionTransform(
            [*build_augment_steps(preset), _resize(input_size)], seed=seed, check_each_transform=True
        )
    if preset not in PRESETS:
        raise ValueError(f"unknown augmentation preset {preset!r}; expected one of {', '.join(PRESETS)}")
    steps: list[Any] = []
    if preset == "ssd":
        steps += [photometric_distort(), ZoomOut(max_scale=4.0, fill=MEAN_RGB, p=0.5)]
    if preset in ("ssd", "ssdlite"):
        steps += [IoUCrop(), A.HorizontalFlip(p=0.5)]
    return DetectionTransform([*steps, _resize(input_size)], seed=seed)


def build_eval_transform(input_size: tuple[int, int]) -> DetectionTransform:
    """Plain resize to input_size (H, W): SSD takes a fixed input, aspect ratio is not kept."""
    return DetectionTransform([_resize(input_size)], seed=0)


def _resize(input_size: tuple[int, int]) -> A.Resize:
    height, width = input_size
    return A.Resize(height=int(height), width=int(width), interpolation=cv2.INTER_LINEAR)


# --- list form of data.augment: [{name: HorizontalFlip, p: 0.5}, ...] -----------------------------

SSD_STEPS = ("ZoomOut", "IoUCrop", "PhotometricDistort")
_NEEDS_EXTRA_DATA = (
    "Mosaic",
    "OverlayElements",
    "FDA",
    "HistogramMatching",
    "PixelDistributionAdaptation",
    "TemplateTransform",
)


def build_augment_steps(spec: Sequence[Any], key: str = "data.augment") -> list[Any]:
    """Albumentations steps of a list-form augment spec, checked; problems are one-line MultiboxErrors at `key[i]`."""
    from multibox.errors import MultiboxError

    if not isinstance(spec, (list, tuple)):
        raise MultiboxError(
            f"{key}: expected a preset name ({', '.join(PRESETS)}) or a list of {{name: Transform, ...}}"
        )
    return [_build_step(item, f"{key}[{index}]", MultiboxError) for index, item in enumerate(spec)]


def _build_step(item: Any, where: str, error: type[Exception]) -> Any:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise error(
            f"{where}: expected a mapping with a 'name' key (e.g. {{name: HorizontalFlip, p: 0.5}}), got {item!r}"
        )
    name, kwargs = item["name"], {k: v for k, v in item.items() if k != "name"}
    if name == "PhotometricDistort":
        factory: Any = photometric_distort
    elif name in ("ZoomOut", "IoUCrop"):
        factory = globals()[name]
    else:
        factory = getattr(A, name, None)
        if not (isinstance(factory, type) and issubclass(factory, (A.DualTransform, A.ImageOnlyTransform))):
            raise error(
                f"{where}: unknown transform {name!r} "
                f"(expected an albumentations image or dual transform, or one of {', '.join(SSD_STEPS)})"
            )
        targets = {getattr(t, "value", t) for t in getattr(factory, "_targets", ())}
        if name in _NEEDS_EXTRA_DATA or (issubclass(factory, A.DualTransform) and "BBoxes" not in targets):
            raise error(
                f"{where}: {name} is not allowed here (it does not support bounding boxes or needs extra inputs)"
            )
    parameters = inspect.signature(factory).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        unknown = sorted(set(kwargs) - set(parameters))
        if unknown:
            raise error(f"{where}: {name} has no argument(s) {', '.join(unknown)}")
    try:
        step = factory(**kwargs)
        probe = DetectionTransform([factory(**(kwargs | {"p": 1.0}))], seed=0)  # catches failures at call time too
        image, _, _ = probe(np.full((64, 64, 3), 128, np.uint8), np.array([[8, 8, 40, 40]], np.float32), np.array([1]))
    except (ValueError, TypeError, KeyError, cv2.error) as exc:  # pydantic's ValidationError is a ValueError
        raise error(f"{where}: bad arguments for {name}: {_first_line(exc)}") from None
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise error(f"{where}: {name} is not allowed here (it must keep the image uint8 RGB)")
    return step


def _first_line(exc: Exception) -> str:
    """Pydantic errors are multi-line; keep their field and message on one line."""
    lines = [
        line.strip() for line in str(exc).splitlines() if line.strip() and not line.strip().startswith("For further")
    ]
    lines = [re.sub(r"\s*\[type=.*\]$", "", line) for line in lines]
    return (
        "; ".join(lines[1:3])
        if len(lines) > 1 and "validation error" in lines[0]
        else (lines[0] if lines else type(exc).__name__)
    )
