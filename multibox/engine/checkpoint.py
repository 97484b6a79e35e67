"""Loading a training checkpoint back into a ready-to-run detector.

Checkpoints are read with ``torch.load(weights_only=True)``: a crafted pickle cannot
run code. The resolved config, class names and category ids travel inside them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from multibox.config import Config, parse_config
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
    path = Path(path)
    if not path.is_file():
        raise MultiboxError(f"{path}: checkpoint not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for corrupt or hostile files
        reason = str(error).splitlines()[0][:120] if str(error) else type(error).__name__
        raise MultiboxError(f"{path}: not a readable checkpoint ({reason})") from None
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    if not isinstance(hparams, dict) or not {"config", "class_names", "category_ids"} <= hparams.keys():
        raise MultiboxError(f"{path}: not a multibox checkpoint (no config and class names inside)")
    return checkpoint


def load_checkpoint(path: str | Path, config: Config | None = None) -> LoadedCheckpoint:
    """Rebuild the detector of a checkpoint. `config`, when given, supplies the eval settings
    (thresholds) and data; the architecture always comes from the checkpoint."""
    checkpoint = read_checkpoint(path)
    hparams = checkpoint["hyper_parameters"]
    saved = parse_config(hparams["config"], f"{path} (embedded config)")
    if config is not None:
        saved = saved.model_copy(update={"eval": config.eval, "data": config.data.model_copy(update={"input_size": saved.data.input_size})})
    class_names = list(hparams["class_names"])
    detector, _ = build_detector(saved, len(class_names), load_weights=False)  # the checkpoint has the weights
    prefix = "detector."
    state = {k[len(prefix):]: v for k, v in checkpoint.get("state_dict", {}).items() if k.startswith(prefix)}
    try:
        detector.load_state_dict(state)
    except RuntimeError as error:
        first = str(error).splitlines()[1].strip() if len(str(error).splitlines()) > 1 else str(error)
        raise MultiboxError(f"{path}: weights do not fit model {saved.model.name} ({first[:120]})") from None
    detector.eval()
    return LoadedCheckpoint(detector, saved, class_names, list(hparams["category_ids"]))
