"""Loading a training checkpoint back into a ready-to-run detector.

Checkpoints are read with ``torch.load(weights_only=True)``: a crafted pickle cannot
run code. The resolved config, class names and category ids travel inside them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from multibox.config import Config, parse_config
from multibox.engine.checkpoint_file import safe_torch_load
from multibox.errors import MultiboxError
from multibox.models.detector import SSDDetector, build_detector


@dataclass
class LoadedCheckpoint:
    detector: SSDDetector
    config: Config
    class_names: list[str]
    category_ids: list[int]


def read_checkpoint(path: str | Path) -> dict:
    """The raw checkpoint dict, with one-line errors for missing, corrupt or foreign files."""
    checkpoint = safe_torch_load(path)
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    if not isinstance(hparams, dict) or not {"config", "class_names", "category_ids"} <= hparams.keys():
        raise MultiboxError(f"{path}: not a multibox checkpoint (no config and class names inside)")
    return checkpoint


def load_checkpoint(path: str | Path, config: Config | None = None) -> LoadedCheckpoint:
    """Rebuild the detector of a checkpoint. `config`, when given, supplies the eval settings
    (thresholds) and data, input size included: the default boxes are made for that size, as the
    loader resizes to it (SSD heads are convolutional). The architecture always comes from the checkpoint."""
    checkpoint = read_checkpoint(path)
    hparams = checkpoint["hyper_parameters"]
    saved = parse_config(hparams["config"], f"{path} (embedded config)")
    if config is not None:
        saved = saved.model_copy(update={"eval": config.eval, "data": config.data})
    class_names = list(hparams["class_names"])
    detector, _ = build_detector(saved, len(class_names), load_weights=False, empty=True)  # weights: the file's
    prefix = "detector."
    state = {k[len(prefix) :]: v for k, v in checkpoint.get("state_dict", {}).items() if k.startswith(prefix)}
    misfit = _misfit(detector.state_dict(), state)
    if misfit:
        raise MultiboxError(f"{path}: weights do not fit model {saved.model.name} as its config describes ({misfit})")
    detector.load_state_dict(state, assign=True)
    detector.eval()
    return LoadedCheckpoint(detector, saved, class_names, list(hparams["category_ids"]))


def _misfit(expected: dict[str, Any], found: dict[str, Any]) -> str | None:
    """Why a state dict cannot load into a model, in one short clause (None when it fits)."""
    missing = [k for k in expected if k not in found]
    extra = [k for k in found if k not in expected]
    shapes = [k for k in expected if k in found and tuple(found[k].shape) != tuple(expected[k].shape)]
    if shapes:
        k = shapes[0]
        return (
            f"{len(shapes)} tensors differ in shape, e.g. {k}: {list(found[k].shape)} in the file, "
            f"{list(expected[k].shape)} in the model"
        )
    if missing or extra:
        example = f"missing {missing[0]}" if missing else f"unexpected {extra[0]}"
        return f"{len(missing)} tensors missing and {len(extra)} unexpected, e.g. {example}"
    return None
