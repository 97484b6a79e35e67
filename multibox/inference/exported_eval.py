"""`multibox eval --weights MODEL.onnx | MODEL.xml`: the exported artefact scored like a checkpoint.

The same loader, accumulator, COCO metrics and report as a checkpoint's evaluation
(:func:`multibox.engine.evaluate.detect_and_evaluate`); only the forward pass is the exported graph's,
in its own runtime. Class names, category ids and input size come from the file's metadata; the data
comes from ``-c CONFIG`` or, like a checkpoint, from the training config the export embedded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from multibox.errors import MultiboxError
from multibox.inference.runtime import ExportedModel
from multibox.metrics.evaluation import Evaluation
from multibox.reporting.plots import REPORT_SCORE_THRESHOLD, check_score_threshold


def exported_config(model: ExportedModel, config_path: Path | None, overrides: list[str] | None) -> Any:
    """The evaluation config: `config_path`'s or the embedded one, with the model's input size."""
    from multibox.config import apply_overrides, load_config, parse_config, resolve_paths

    if config_path is not None:
        config = load_config(config_path, overrides)
    elif model.metadata.config is not None:
        raw = apply_overrides(model.metadata.config, overrides or [])
        config = resolve_paths(parse_config(raw, f"{model.path} (embedded config)"))
    else:
        raise MultiboxError(f"{model.path}: no embedded config; pass -c CONFIG for the validation set")
    return config.model_copy(
        update={"data": config.data.model_copy(update={"input_size": list(model.metadata.input_size)})}
    )


def evaluate_model(model: ExportedModel, config: Any, progress: bool = True) -> tuple[Evaluation, Any]:
    """The :class:`Evaluation` of an exported model on `config`'s validation set, scored as a checkpoint's
    (eval.metric included), and that set."""
    from multibox.data.datamodule import DetectionDataModule
    from multibox.engine.evaluate import detect_and_evaluate

    data = DetectionDataModule(config)
    if data.val_set is None:
        raise MultiboxError("config: no validation set; set data.val or data.val_split")
    meta = model.metadata
    if list(data.category_ids) != meta.category_ids:
        raise MultiboxError(
            f"{model.path}: exported with categories {meta.category_ids}, but the val set has {list(data.category_ids)}"
        )
    evaluation = detect_and_evaluate(
        None,
        data.val_dataloader(),
        data.val_set.to_coco_gt(),
        meta.category_ids,
        meta.class_names,
        torch.device("cpu"),
        progress=progress,
        prepare_batch=data.prepare_batch,
        metric=config.eval.metric,
        detect=model.detect,
    )
    return evaluation, data.val_set


def evaluate_exported(
    weights: Path,
    config_path: Path | None = None,
    overrides: list[str] | None = None,
    report_dir: Path | None = None,
    score_threshold: float = REPORT_SCORE_THRESHOLD,
) -> dict[str, Any]:
    """`multibox eval` of an exported model; with `report_dir`, the same report.md as a checkpoint's."""
    if report_dir is not None:
        check_score_threshold(score_threshold)
    model = ExportedModel(weights)
    config = exported_config(model, config_path, overrides)
    evaluation, val_set = evaluate_model(model, config, config.train.progress)
    if report_dir is not None:
        from multibox.reporting.report import save_metrics_json, write_evaluation_report

        save_metrics_json(evaluation.metrics, Path(report_dir) / "metrics.json")
        write_evaluation_report(report_dir, evaluation, val_set, score_threshold)
    return evaluation.metrics
