"""Pretrained weights: ImageNet backbones, torchvision's COCO detectors and detector weight files.

Two config keys (``model.backbone_weights``, ``model.weights``) start a model from weights
instead of random initialisation. Files are read with ``torch.load(weights_only=True)``.
torchvision's files (``imagenet``, ``torchvision:<Enum>.<MEMBER>``) are downloaded the way
torchvision downloads them (``torch.hub.download_url_to_file``: progress bar, the hash prefix in
the file name checked) into torch hub's cache, once; ``MULTIBOX_OFFLINE=1`` turns downloads off,
and ``MULTIBOX_WEIGHTS_MIRROR`` fetches the same file names from a mirror instead of
download.pytorch.org.

* Backbone weights are a classification network's state dict in torchvision's layout. Each
  model family maps those keys onto its backbone (``imagenet`` of its entry in ``models.factory.MODELS``); only the
  classifier's layers are used, never its fully connected head, and the SSD extras stay as
  initialised. ``imagenet`` means torchvision's file for that backbone, in torch hub's cache
  (``torch.hub.get_dir()/checkpoints``), downloaded when missing.
* Detector weights are a multibox checkpoint or a torchvision detection state dict (the key
  names are the same: ``backbone.*`` and ``head.*``). Head layers whose shapes differ (another
  class count, other boxes per location) keep their fresh initialisation, so a COCO model can
  be fine-tuned to a few classes; a backbone that does not fit is refused.

Every problem is a one-line :class:`MultiboxError` naming the config key and the file.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import Tensor

from multibox.config import ModelConfig
from multibox.errors import MultiboxError
from multibox.models.backbone_weights import BackboneFamily
from multibox.models.factory import MODELS
from multibox.models.ssd import SSD

log = logging.getLogger(__name__)

IMAGENET = "imagenet"


def _family(name: str, backbone: str | None = None) -> BackboneFamily:
    """The backbone family of model `name` (of `backbone` for custom), from its entry in MODELS."""
    spec = MODELS.get(name)
    families = spec.imagenet if spec is not None else None
    family = families.get(backbone or "") if isinstance(families, dict) else families
    if family is None:
        what = f"custom with model.backbone={backbone}" if name == "custom" else name
        raise MultiboxError(
            f"model.backbone_weights: {what} has no mapping from classification weights "
            f"(supported: {', '.join(imagenet_models())}); use model.weights with a detector checkpoint instead"
        )
    return family


def imagenet_models() -> list[str]:
    """Models (custom: per backbone) whose backbone can start from torchvision's ImageNet weights."""
    names: list[str] = []
    for name, spec in MODELS.items():
        if isinstance(spec.imagenet, dict):
            names += [f"{name}/{backbone}" for backbone in spec.imagenet]
        elif spec.imagenet is not None:
            names.append(name)
    return names


def _is_none(value: str | None) -> bool:
    return value is None or value.strip().lower() in ("", "none", "null")


def imagenet_weights_path(name: str, backbone: str | None = None) -> Path:
    """Where torchvision's ImageNet weights of model ``name``'s backbone lie in torch hub's cache
    (``torch.hub.get_dir()/checkpoints/<the url's file name>``, as torchvision would store them).
    ``backbone`` is ``model.backbone``, used for ``name="custom"`` only."""
    return cached_weights_path(_family(name, backbone).imagenet().url)


MIRROR_ENV = "MULTIBOX_WEIGHTS_MIRROR"
OFFLINE_ENV = "MULTIBOX_OFFLINE"
TORCHVISION_PREFIX = "torchvision:"
# torchvision's detection weights that model.weights accepts by name, and the model each fits.
TORCHVISION_DETECTORS = {
    "SSD300_VGG16_Weights": "ssd300_vgg16",
    "SSDLite320_MobileNet_V3_Large_Weights": "ssdlite320_mobilenet_v3_large",
}


def cached_weights_path(url: str) -> Path:
    """Where torch hub keeps ``url``'s file: ``torch.hub.get_dir()/checkpoints/<file name>`` (TORCH_HOME moves it)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def _source_url(url: str) -> str:
    """``url``, or the same file name under ``$MULTIBOX_WEIGHTS_MIRROR`` (a mirror or proxy of download.pytorch.org)."""
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    return f"{mirror.rstrip('/')}/{os.path.basename(urlparse(url).path)}" if mirror else url


def fetch_torchvision_file(url: str, key: str) -> Path:
    """The local path of torchvision's weight file ``url``: from torch hub's cache, else downloaded into it.

    The download is torch hub's own (``download_url_to_file``, as ``Weights.get_state_dict`` and
    ``load_state_dict_from_url`` do): a progress bar on stderr, the sha256 checked against the hash
    prefix in the file name, and the file moved into place only when complete and correct.
    """
    path = cached_weights_path(url)
    if path.is_file():
        return path
    source = _source_url(url)
    by_hand = f"download {source} and put it at {path}, or set {key.split('=')[0]} to a file's path"
    if os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("", "0", "false", "no"):
        raise MultiboxError(f"{key}: {path.name} is not in torch hub's cache and {OFFLINE_ENV} is set: {by_hand}")
    match = torch.hub.HASH_REGEX.search(path.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    print(f"downloading {source} to {path}", file=sys.stderr)
    try:
        torch.hub.download_url_to_file(source, str(path), match.group(1) if match else None, progress=True)
    except (OSError, ValueError) as error:  # URLError/HTTPError/timeouts are OSErrors; a bad URL is a ValueError
        reason = getattr(error, "reason", None) or _first_line(error)
        raise MultiboxError(f"{key}: cannot download {source} ({reason}): {by_hand}") from None
    except RuntimeError as error:  # torch hub's hash check ("invalid hash value"); nothing is left in the cache
        raise MultiboxError(f"{key}: {source}: {_first_line(error, 200)}; the file was not kept: {by_hand}") from None
    return path


def torchvision_detector_weights(spec: str, model_name: str) -> Path:
    """``torchvision:SSD300_VGG16_Weights.COCO_V1`` -> the file's local path (downloaded when needed).

    Refuses names torchvision does not have and weights of another model than ``model_name``."""
    key = "model.weights"
    enum_name, _, member = spec[len(TORCHVISION_PREFIX) :].strip().partition(".")
    fits = TORCHVISION_DETECTORS.get(enum_name)
    if fits is None:
        raise MultiboxError(
            f"{key}: {spec}: unknown; torchvision's detection weights here: "
            + ", ".join(f"{TORCHVISION_PREFIX}{e}.COCO_V1" for e in TORCHVISION_DETECTORS)
        )
    import torchvision.models.detection as detection

    enum = getattr(detection, enum_name)
    if member not in enum.__members__:
        raise MultiboxError(f"{key}: {spec}: {enum_name} has {', '.join(enum.__members__)}, not {member or '(none)'}")
    if fits != model_name:
        raise MultiboxError(f"{key}: {spec} is for model.name={fits}, but model.name is {model_name}")
    return fetch_torchvision_file(enum[member].url, f"{key}={spec}")


# ---------------------------------------------------------------------------------------------
# Reading files.
# ---------------------------------------------------------------------------------------------


def _first_line(error: BaseException, limit: int = 120) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:limit] if text else type(error).__name__


def _read(path: Path, key: str) -> Any:
    if not path.is_file():
        raise MultiboxError(f"{key}: {path}: file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # corrupt, truncated, foreign or hostile pickles raise many types
        raise MultiboxError(f"{key}: {path}: not a readable weight file ({_first_line(error)})") from None


def _tensors(state: Any) -> dict[str, Tensor]:
    return (
        {k: v for k, v in state.items() if isinstance(k, str) and isinstance(v, Tensor)}
        if isinstance(state, dict)
        else {}
    )


def _unwrap(raw: Any) -> tuple[dict[str, Tensor], str | None]:
    """The state dict inside a file and, for multibox checkpoints, the model it was saved from.

    Accepts a plain state dict, a Lightning/multibox checkpoint (``state_dict``) and
    torchvision's reference-script checkpoints (``model``)."""
    source_name = None
    if isinstance(raw, dict) and isinstance(raw.get("state_dict"), dict):
        try:
            source_name = str(raw["hyper_parameters"]["config"]["model"]["name"])
        except (KeyError, TypeError):
            source_name = None
        return _tensors(raw["state_dict"]), source_name
    if isinstance(raw, dict) and isinstance(raw.get("model"), dict):
        return _tensors(raw["model"]), None
    return _tensors(raw), None


def _strip_prefix(state: dict[str, Tensor], prefixes: tuple[str, ...]) -> dict[str, Tensor]:
    """Keys without ``module.`` (DataParallel) and the first of ``prefixes`` that the keys carry."""
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    for prefix in prefixes:
        if prefix and any(k.startswith(prefix) for k in state):
            return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def _shape(t: Tensor | torch.Size) -> str:
    return "[" + ", ".join(str(d) for d in (t.shape if isinstance(t, Tensor) else t)) + "]"


def _keys(keys: list[str], limit: int = 3) -> str:
    return ", ".join(keys[:limit]) + (", ..." if len(keys) > limit else "")


# ---------------------------------------------------------------------------------------------
# Backbone weights.
# ---------------------------------------------------------------------------------------------


def load_backbone_weights(model: SSD, name: str, source: str | Path, backbone: str | None = None) -> None:
    """Load classification weights into ``model.backbone`` (in place).

    Args:
        model: a freshly built model ``name`` (``multibox.models.factory.build_model``).
        name: the model's name; picks the key mapping (its ``MODELS`` entry).
        source: ``"imagenet"`` (torchvision's file, from torch hub's local cache only) or the
            path of a classification state dict in torchvision's layout.
        backbone: ``model.backbone`` when ``name`` is ``"custom"`` (ignored otherwise).

    Raises:
        MultiboxError: no mapping for ``name``, the file is missing or unreadable, some tensor
            the backbone needs is not in the file, or a shape differs.
    """
    family = _family(name, backbone)
    key = "model.backbone_weights"
    imagenet = isinstance(source, str) and source.strip().lower() == IMAGENET
    if imagenet:
        path = fetch_torchvision_file(family.imagenet().url, f"{key}=imagenet")
    else:
        path = Path(source).expanduser()
    raw = _read(path, key)
    state, _ = _unwrap(raw)
    state = _strip_prefix(state, ())
    if not state:
        raise MultiboxError(f"{key}: {path}: not a state dict (no tensors inside)")
    if any(k.startswith(("backbone.", "detector.model.backbone.")) for k in state):
        raise MultiboxError(
            f"{key}: {path}: a detector's weights, not a classifier's; detector weights go in model.weights"
        )

    extractor = model.backbone
    mapped: dict[str, Tensor] = {}
    wanted = 0
    missing: list[str] = []
    mismatched: list[tuple[str, Tensor, Tensor]] = []
    for ours, value in extractor.state_dict().items():
        theirs = family.source_key(extractor, ours)
        if theirs is None:
            continue
        wanted += 1
        if theirs not in state:
            if not ours.endswith("num_batches_tracked"):  # old torchvision files predate this buffer
                missing.append(theirs)
            continue
        if state[theirs].shape != value.shape:
            mismatched.append((theirs, state[theirs], value))
            continue
        mapped[ours] = state[theirs]
    if missing:
        raise MultiboxError(
            f"{key}: {path}: not {family.title} classification weights in torchvision's layout "
            f"({len(missing)} of the {wanted} tensors {name}'s backbone needs are missing: {_keys(missing)})"
        )
    if mismatched:
        theirs, file_value, value = mismatched[0]
        hint = (
            " (torchvision's ImageNet weights exist for model.width_mult 1.0 only)"
            if imagenet
            else (" (another network, or another width_mult?)")
        )
        raise MultiboxError(
            f"{key}: {path}: {theirs} has shape {_shape(file_value)} in the file but {name}'s backbone needs "
            f"{_shape(value)} ({len(mismatched)} tensors differ){hint}"
        )
    extractor.load_state_dict(mapped, strict=False)
    log.info("loaded %d %s backbone tensors from %s", len(mapped), family.title, path)


# ---------------------------------------------------------------------------------------------
# Detector weights.
# ---------------------------------------------------------------------------------------------


def _head_part(key: str) -> str:
    """``classification``, ``regression`` or ``other`` for a ``head.*`` key (SSD/SSDLite heads name
    theirs ``classification_head``/``regression_head``, the shared FPN head ``*_tower``)."""
    return "classification" if "classification" in key else "regression" if "regression" in key else "other"


def _reinit_summary(model: SSD, state: dict[str, Tensor], skipped: list[str]) -> str:
    """One phrase: which head layers were left re-initialised, and why."""
    layers = sorted({k.rsplit(".", 1)[0] for k in skipped})
    where = []
    for part in ("classification", "regression", "other"):
        mine = [layer for layer in layers if _head_part(layer) == part]
        if mine:
            levels = sorted({int(m[1]) for layer in mine if (m := re.search(r"module_list\.(\d+)", layer))})
            at = f" on levels {', '.join(map(str, levels))}" if levels else f" ({', '.join(mine)})"
            where.append(
                f"{len(mine)} {part if part != 'other' else 'other head'} layer{'s' if len(mine) > 1 else ''}{at}"
            )
    reasons = []
    cls = [k for k in skipped if _head_part(k) == "classification" and k.endswith("weight")]
    reg = [k for k in skipped if _head_part(k) == "regression"]
    num_classes, anchors = getattr(model.head, "num_classes", None), getattr(model.head, "num_anchors", None)
    if cls and not reg and num_classes is not None and anchors:
        level = re.search(r"module_list\.(\d+)", cls[0])
        file_classes = state[cls[0]].shape[0] // anchors[int(level[1]) if level else 0]
        reasons.append(f"the file scores {file_classes} classes, the model {num_classes} (background included)")
    elif cls:
        reasons.append("the class count differs")
    if reg:
        reasons.append("the default boxes per location differ (anchors)")
    return (
        f"{' and '.join(where)}, whose shapes differ from the file's: {' and '.join(reasons) or 'another head layout'}"
    )


def load_detector_weights(model: SSD, name: str, path: str | Path) -> list[str]:
    """Load a detector weight file into ``model`` (in place); returns the keys left re-initialised.

    Args:
        model: a freshly built model ``name``.
        name: the model's name, checked against a multibox checkpoint's.
        path: a multibox checkpoint (``state_dict`` with ``detector.model.*`` keys and
            ``hyper_parameters``) or a torchvision detection state dict (``backbone.*``/``head.*``,
            e.g. ``torchvision.models.detection.ssd300_vgg16(...).state_dict()``).

    Every tensor whose shape fits is loaded. Head tensors whose shape differs (another class
    count or other boxes per location) keep the model's fresh initialisation, reported in one
    logged line; anything else that does not fit is an error.

    Raises:
        MultiboxError: file missing or unreadable, a checkpoint of another model, or a backbone
            (or head layout) that does not fit.
    """
    key = "model.weights"
    path = Path(path).expanduser()
    state, source_name = _unwrap(_read(path, key))
    if source_name is not None and source_name != name:
        raise MultiboxError(f"{key}: {path}: a checkpoint of {source_name}, but model.name is {name}")
    state = _strip_prefix(state, ("detector.model.", "model."))
    if not any(k.startswith("backbone.") for k in state):
        classifier = any(re.match(r"(features|conv1|layer1)\.", k) for k in state)
        hint = "; classification weights go in model.backbone_weights" if classifier else ""
        raise MultiboxError(f"{key}: {path}: no detector weights inside (no backbone.* tensors){hint}")

    targets = model.state_dict()
    missing = [k for k in targets if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in targets]
    if missing or unexpected:
        parts = [f"{len(missing)} of its tensors missing ({_keys(missing)})"] if missing else []
        parts += [f"{len(unexpected)} unknown ({_keys(unexpected)})"] if unexpected else []
        raise MultiboxError(f"{key}: {path}: does not fit {name}: {'; '.join(parts)} (weights of another model?)")

    misfits = [k for k, value in state.items() if value.shape != targets[k].shape]
    for k in misfits:  # anything outside the head must fit: it is the part that carries over
        if not k.startswith("head."):
            tail = (
                "; its MobileNetV3 has the full tail with model.backbone_weights set, the reduced tail without"
                if name == "ssdlite320_mobilenet_v3_large"
                else ""
            )
            raise MultiboxError(
                f"{key}: {path}: {k} has shape {_shape(state[k])} in the file but {_shape(targets[k])} in {name} "
                f"({sum(not m.startswith('head.') for m in misfits)} backbone tensors differ: weights of another model "
                f"or model.width_mult?{tail})"
            )
    skipped = [k for k in misfits if k.startswith("head.")]
    model.load_state_dict({k: v for k, v in state.items() if k not in skipped}, strict=False)
    if skipped:
        log.warning("%s: %s: re-initialised %s", key, path, _reinit_summary(model, state, skipped))
    log.info("loaded %d of %d tensors from %s", len(state) - len(skipped), len(targets), path)
    return skipped


# ---------------------------------------------------------------------------------------------
# Entry point used by multibox.models.detector.build_detector.
# ---------------------------------------------------------------------------------------------


def wants_backbone_weights(config: ModelConfig) -> bool:
    """Whether the run starts its backbone from classification weights (``model.backbone_weights`` set)."""
    return not _is_none(config.backbone_weights)


def resolve_pretrained_fallback(config: ModelConfig) -> ModelConfig:
    """The model config a training run really starts from, decided before the model is built.

    With ``backbone_weights: imagenet`` and ``pretrained_fallback: scratch``, the file is fetched now (torch hub's
    cache, else downloaded). When it cannot be had, one line says so and the run starts from scratch: the config
    says ``backbone_weights: none`` and, when ``scratch_width_mult`` is set, takes that width. Deciding here, not
    while loading, means the saved ``config.yaml`` and checkpoint describe the network that was trained."""
    wanted = config.backbone_weights
    if config.pretrained_fallback != "scratch" or _is_none(wanted) or str(wanted).strip().lower() != IMAGENET:
        return config
    family = _family(config.name, getattr(config, "backbone", None))
    try:
        fetch_torchvision_file(family.imagenet().url, f"model.backbone_weights={IMAGENET}")
    except MultiboxError as error:
        width = config.scratch_width_mult or config.width_mult
        log.warning(
            "%s; model.pretrained_fallback=scratch: training from scratch%s",
            error,
            f" at model.width_mult={width:g} (model.scratch_width_mult)" if width != config.width_mult else "",
        )
        return config.model_copy(update={"backbone_weights": None, "width_mult": width})
    return config


def apply_weights(model: SSD, config: ModelConfig, load: bool = True) -> SSD:
    """Start ``model`` (just built from ``config``) from the configured weights, in place.

    ``config.backbone_weights`` first, then ``config.weights`` (whose tensors win where both
    apply). The model was built for them (``build_model(pretrained_backbone=...)``: MobileNetV3's full
    tail); with ``load`` False only the names are checked (rebuilding a checkpoint, whose weights replace these).
    """
    with_backbone = wants_backbone_weights(config)
    if with_backbone:
        _family(config.name, getattr(config, "backbone", None))  # a model without a mapping fails before anything else
    if not load:
        return model
    if with_backbone:
        assert config.backbone_weights is not None  # with_backbone says so
        try:
            load_backbone_weights(model, config.name, config.backbone_weights, getattr(config, "backbone", None))
        except MultiboxError as error:
            imagenet = str(config.backbone_weights).strip().lower() == IMAGENET
            if not (imagenet and getattr(config, "pretrained_fallback", "error") == "scratch"):
                raise
            log.warning("%s; model.pretrained_fallback=scratch: training from scratch", error)
    if config.weights is not None and not _is_none(config.weights):
        weights = str(config.weights)
        if weights.startswith(TORCHVISION_PREFIX):
            weights = str(torchvision_detector_weights(weights, config.name))
        load_detector_weights(model, config.name, weights)
    return model
