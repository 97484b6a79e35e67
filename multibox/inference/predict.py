"""Prediction on an image or a folder: annotated copies plus COCO-results ``predictions.json``."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from rich.progress import track

from multibox.data.transforms import build_eval_transform
from multibox.engine.checkpoint import load_checkpoint
from multibox.engine.evaluate import pick_device
from multibox.errors import MultiboxError
from multibox.inference.draw import draw_detections, save_image

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


def list_images(source: Path) -> list[Path]:
    """An image file, or every image under a folder (recursively), sorted."""
    if source.is_file():
        return [source]
    if source.is_dir():
        files = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise MultiboxError(f"{source}: no images found ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return files
    raise MultiboxError(f"{source}: no such file or folder")


def read_rgb(path: Path) -> np.ndarray | None:
    """RGB uint8 image, or None when OpenCV cannot decode it."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if image is None else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _coco_results(image_id: int, name: str, detection: dict[str, np.ndarray], category_ids: np.ndarray) -> list[dict[str, Any]]:
    boxes = detection["boxes"]
    xywh = np.concatenate((boxes[:, :2], boxes[:, 2:] - boxes[:, :2]), axis=1).round(2)
    return [
        {"image_id": image_id, "file_name": name, "category_id": int(c), "bbox": [float(v) for v in b], "score": round(float(s), 4)}
        for b, c, s in zip(xywh, category_ids[detection["labels"]], detection["scores"])
    ]


def _check_output_dir(out_dir: Path, image_root: Path) -> None:
    """Never overwrite the user's images or an earlier prediction run."""
    if out_dir.resolve() == image_root.resolve():
        raise MultiboxError(f"{out_dir}: --out is the image folder itself; annotated copies would overwrite the originals")
    if (out_dir / "predictions.json").exists():
        raise MultiboxError(f"{out_dir}: already holds predictions.json from an earlier run; choose another --out")


def predict(
    weights: Path, source: Path, out_dir: Path, conf: float = 0.3, batch_size: int = 8, device: str = "auto", progress: bool = True
) -> list[dict[str, Any]]:
    """Detect objects in `source`; write annotated images (same relative paths) and predictions.json."""
    loaded = load_checkpoint(weights)
    files = list_images(source)
    _check_output_dir(out_dir, source if source.is_dir() else source.parent)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = pick_device(device)
    detector = loaded.detector.to(target)
    transform = build_eval_transform(tuple(loaded.config.data.input_size))
    category_ids = np.array([0, *loaded.category_ids])
    names = ["background", *loaded.class_names]
    root = source if source.is_dir() else source.parent
    results: list[dict[str, Any]] = []
    image_ids = {path: index + 1 for index, path in enumerate(files)}
    batches = [files[i : i + batch_size] for i in range(0, len(files), batch_size)]
    for batch in track(batches, description="predicting", transient=True) if progress else batches:
        images = [(path, read_rgb(path)) for path in batch]
        for path, image in images:
            if image is None:
                warnings.warn(f"{path}: cannot read image, skipped", stacklevel=2)
        images = [(path, image) for path, image in images if image is not None]
        if not images:
            continue
        empty_boxes, empty_labels = np.zeros((0, 4), np.float32), np.zeros((0,), np.int64)
        tensors = [torch.from_numpy(transform(im, empty_boxes, empty_labels)[0]).permute(2, 0, 1) for _, im in images]
        sizes = torch.tensor([im.shape[:2] for _, im in images], device=target)
        detections = detector.detect(torch.stack(tensors).to(target).float().div_(255.0), sizes)
        for (path, image), det in zip(images, detections):
            keep = det["scores"] >= conf
            det = {k: v[keep].cpu().numpy() for k, v in det.items()}
            name = path.relative_to(root).as_posix()
            results += _coco_results(image_ids[path], name, det, category_ids)
            drawn = draw_detections(image, det["boxes"], [names[i] for i in det["labels"]], det["scores"], color_key=det["labels"])
            (out_dir / name).parent.mkdir(parents=True, exist_ok=True)
            save_image(out_dir / name, drawn)
    (out_dir / "predictions.json").write_text(json.dumps(results), encoding="utf-8")
    return results
