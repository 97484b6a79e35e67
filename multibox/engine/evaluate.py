"""COCO evaluation of a detector over a data loader (used after training and by `multibox eval`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import torch
from rich.progress import track

from multibox.engine.checkpoint import load_checkpoint, read_checkpoint
from multibox.engine.evaluation import DetectionAccumulator, coco_evaluate
from multibox.engine.module import images_to_float
from multibox.errors import MultiboxError
from multibox.models.detector import SSDDetector


def pick_device(name: str = "auto") -> torch.device:
    """'auto' takes the GPU when there is one."""
    if name in ("auto", "gpu"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@torch.no_grad()
def evaluate_detector(
    detector: SSDDetector,
    loader: Iterable[dict[str, torch.Tensor]],
    ground_truth: dict,
    category_ids: list[int],
    class_names: list[str],
    device: torch.device | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the detector over every batch and compute COCO metrics against `ground_truth`."""
    device = device or pick_device()
    detector = detector.to(device).eval()
    lookup = torch.tensor([0, *category_ids], dtype=torch.long, device=device)
    accumulator = DetectionAccumulator()
    batches = track(loader, description="evaluating", transient=True) if progress else loader
    for batch in batches:
        images = images_to_float(batch["images"].to(device, non_blocking=True))
        detections = detector.detect(images, batch["orig_sizes"].to(device))
        accumulator.add(
            batch["image_ids"],
            [d["boxes"] for d in detections],
            [d["scores"] for d in detections],
            [lookup[d["labels"]] for d in detections],
        )
    return coco_evaluate(ground_truth, accumulator.results(), class_names)


def evaluate_checkpoint(weights: Path, config_path: Path | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    """`multibox eval`: the checkpoint's detector on the val set of `config_path` (or of its own config)."""
    from multibox.config import apply_overrides, load_config, parse_config, resolve_paths
    from multibox.data.datamodule import DetectionDataModule

    if config_path is not None:
        config = load_config(config_path, overrides)
    else:
        embedded = read_checkpoint(weights)["hyper_parameters"]["config"]
        config = resolve_paths(parse_config(apply_overrides(embedded, overrides or []), f"{weights} (embedded config)"))
    loaded = load_checkpoint(weights, config)
    data = DetectionDataModule(config)
    if data.val_set is None:
        raise MultiboxError("config: no validation set; set data.val or data.val_split")
    if list(data.category_ids) != loaded.category_ids:
        raise MultiboxError(f"{weights}: trained on categories {loaded.category_ids}, but the val set has {list(data.category_ids)}")
    return evaluate_detector(
        loaded.detector, data.val_dataloader(), data.val_set.to_coco_gt(), loaded.category_ids, loaded.class_names,
        pick_device(config.train.accelerator), progress=config.train.progress,
    )
