"""COCO evaluation of a detector over a data loader (used after training and by `multibox eval`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from rich.progress import track

from multibox.data.dataset import images_to_float, warn_skipped
from multibox.devices import resolve_device
from multibox.engine.checkpoint import load_checkpoint, read_checkpoint
from multibox.errors import MultiboxError
from multibox.metrics.coco import DetectionAccumulator
from multibox.metrics.evaluation import Evaluation, score
from multibox.models.detector import SSDDetector
from multibox.outputs import writable_dir
from multibox.reporting.plots import REPORT_SCORE_THRESHOLD, check_score_threshold

if TYPE_CHECKING:
    from multibox.config import Config
    from multibox.data.datamodule import DetectionDataModule


@torch.no_grad()
def detect_and_evaluate(
    detector: SSDDetector | None,
    loader: Iterable[dict[str, torch.Tensor]],
    ground_truth: dict,
    category_ids: list[int],
    class_names: list[str],
    device: torch.device | None = None,
    progress: bool = True,
    prepare_batch: Callable[[dict[str, Any], torch.device], dict[str, Any]] | None = None,
    metric: str = "coco",
    detect: Callable[[torch.Tensor, torch.Tensor], list[dict[str, torch.Tensor]]] | None = None,
) -> Evaluation:
    """Run the detector over every batch; returns the :class:`Evaluation`: metrics against `ground_truth`, the
    detections themselves (COCO results, dataset category ids) and the ground truth scored, which the report draws.

    `prepare_batch` readies a loader batch on the device (`DetectionDataModule.prepare_batch`: with
    data.decode=gpu the loader's batches are still encoded files). `detect`, when given, replaces the
    detector: uint8 images and original sizes → detections (an exported model, `multibox eval --weights x.onnx`).
    `metric` (eval.metric): voc07/voc add VOC's. Unreadable images are left out of the metrics and the ground truth."""
    device = device or resolve_device()
    if detect is None:
        assert detector is not None, "a detector or a detect function"
        detector = detector.to(device).eval()
    lookup = torch.tensor([0, *category_ids], dtype=torch.long, device=device)
    accumulator = DetectionAccumulator()
    batches = track(loader, description="evaluating", transient=True) if progress else loader
    skipped = 0
    for batch in batches:
        batch = prepare_batch(batch, device) if prepare_batch is not None else batch
        for message in batch.get("skipped_files", []) or []:
            warn_skipped(message)
        skipped += int(batch.get("skipped", 0))
        if not len(batch["image_ids"]):  # every image of the batch was unreadable
            continue
        if detect is not None:
            detections = [{k: v.to(device) for k, v in d.items()} for d in detect(batch["images"], batch["orig_sizes"])]
        else:
            assert detector is not None
            images = images_to_float(batch["images"].to(device, non_blocking=True))
            detections = detector.detect(images, batch["orig_sizes"].to(device))
        accumulator.add(
            batch["image_ids"],
            [d["boxes"] for d in detections],
            [d["scores"] for d in detections],
            [lookup[d["labels"]] for d in detections],
        )
    return score(accumulator, ground_truth, class_names, metric, skipped)


def default_report_dir(weights: Path) -> Path:
    """Where `multibox eval --plots` writes by default: ``<run>/eval`` for ``<run>/checkpoints/x.ckpt``,
    else ``<folder>/<stem>_eval``; the first of those, ``-2``, ``-3``, ... that holds no report yet."""
    weights = Path(weights)
    base = (
        weights.parent.parent / "eval"
        if weights.parent.name == "checkpoints"
        else weights.parent / f"{weights.stem}_eval"
    )
    candidate, index = base, 1
    while (candidate / "report.md").exists():
        index += 1
        candidate = base.with_name(f"{base.name}-{index}")
    return candidate


def check_report_dir(folder: Path) -> Path:
    """An explicitly chosen report folder must not hold a report already: nothing is overwritten silently."""
    folder = Path(folder)
    if (folder / "report.md").exists():
        raise MultiboxError(f"{folder}: already holds a report; delete it or pass another --plots folder")
    return writable_dir(folder, "evaluation report")


def evaluate_val_set(
    detector: SSDDetector, data: DetectionDataModule, config: Config, ground_truth: dict
) -> Evaluation:
    """`detect_and_evaluate` over a DetectionDataModule's val loader with the config's device, progress and metric:
    the final evaluation after training and `multibox eval` score the same way."""
    return detect_and_evaluate(
        detector,
        data.val_dataloader(),
        ground_truth,
        list(data.category_ids),
        list(data.class_names),
        resolve_device(config.train.accelerator),
        progress=config.train.progress,
        prepare_batch=data.prepare_batch,
        metric=config.eval.metric,
    )


def evaluate_checkpoint(
    weights: Path,
    config_path: Path | None = None,
    overrides: list[str] | None = None,
    report_dir: Path | None = None,
    score_threshold: float = REPORT_SCORE_THRESHOLD,
    slicing: Any = None,
) -> dict[str, Any]:
    """`multibox eval`: the checkpoint's detector on the val set of `config_path` (or of its own config).

    With `report_dir`, also writes the pictures and report.md there (see
    :func:`~multibox.reporting.report.write_evaluation_report`), with the training curves when the
    checkpoint sits in a run folder that has its ``metrics.csv``. With `slicing` (a
    :class:`~multibox.engine.sliced.Slicing`), frames are read at native resolution and sliced.
    """
    from multibox.config import apply_overrides, load_config, parse_config, resolve_paths
    from multibox.data.datamodule import DetectionDataModule

    if report_dir is not None:
        check_score_threshold(score_threshold)
    if config_path is not None:
        config = load_config(config_path, overrides)
    else:
        embedded = read_checkpoint(weights)["hyper_parameters"]["config"]
        config = resolve_paths(parse_config(apply_overrides(embedded, overrides or []), f"{weights} (embedded config)"))
    loaded = load_checkpoint(weights, config)
    data = DetectionDataModule(config, evaluation_only=True)
    if data.val_set is None:
        raise MultiboxError("config: no validation set; set data.val or data.val_split")
    if list(data.category_ids) != loaded.category_ids:
        raise MultiboxError(
            f"{weights}: trained on categories {loaded.category_ids}, but the val set has {list(data.category_ids)}"
        )
    if slicing is not None:
        from multibox.engine.sliced import evaluate_sliced

        evaluation = evaluate_sliced(
            loaded.detector,
            data.val_set,
            loaded.category_ids,
            loaded.class_names,
            loaded.config.data.input_size,
            slicing,
            resolve_device(config.train.accelerator),
            config.data.batch_size,
            metric=config.eval.metric,
        )
    else:
        evaluation = evaluate_val_set(loaded.detector, data, config, data.val_set.to_coco_gt())
    if report_dir is not None:
        from multibox.reporting.report import save_metrics_json, write_evaluation_report

        save_metrics_json(evaluation.metrics, Path(report_dir) / "metrics.json")
        run_log = Path(weights).parent.parent / "metrics.csv"
        write_evaluation_report(
            report_dir,
            evaluation,
            data.val_set,
            score_threshold,
            training_log=run_log if Path(weights).parent.name == "checkpoints" else None,
        )
    metrics = evaluation.metrics
    return metrics
