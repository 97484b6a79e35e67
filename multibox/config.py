"""Config schema (pydantic v2), loading from YAML/JSON, and dotted command-line overrides.

Every user-facing option lives here with its default and one line of help. Loading
turns every problem into a one-line :class:`MultiboxError` naming the file and key.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from multibox.dataset_formats import FORMATS, annotations_help
from multibox.errors import MultiboxError


class _Section(BaseModel):
    """Base of every section: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class SplitPaths(_Section):
    images: Path = Field(description="Folder holding the split's images.")
    annotations: Path | None = Field(
        None,
        description=f"The split's annotations: {annotations_help()}.",
    )


class CognataConfig(_Section):
    """Box filters of the Cognata reader (defaults of mlcommons/abtf-ssd-pytorch)."""

    min_area: float = Field(50.0, ge=0.0, description="Drop boxes smaller than this area (pixels^2).")
    min_side: float = Field(8.0, ge=0.0, description="Drop boxes whose width or height is below this (pixels).")
    max_distance: float = Field(300.0, gt=0.0, description="Drop objects farther than this center_distance.")
    ignored_classes: list[int] = Field(
        default_factory=lambda: [2, 25, 31], description="Raw class ids dropped (pole, parking, fence)."
    )
    max_boxes: int = Field(500, ge=1, description="Boxes kept per image at most.")
    recordings: list[str] | None = Field(None, description="Recording folders to read (all when not set).")
    cameras: list[str] | None = Field(
        None, description="Cameras to read, e.g. Cognata_Camera_01_8M (all when not set)."
    )


class TilesConfig(_Section):
    """Tiled training for small objects in large frames (see multibox.data.tiles)."""

    size: tuple[int, int] = Field(
        description="Crop [H, W] in frame pixels (after scale); equal to data.input_size, objects keep their native "
        "scale."
    )
    overlap: float = Field(
        0.2,
        ge=0.0,
        lt=1.0,
        description="Overlap of the tile grid the uniform sampler draws from (as sliced inference).",
    )
    sampler: Literal["objects", "uniform"] = Field(
        "objects",
        description="objects: centre the crop near a random object (with probability object_prob); uniform: a grid "
        "tile.",
    )
    object_prob: float = Field(
        0.7, ge=0.0, le=1.0, description="objects sampler: chance of a crop centred near an object."
    )
    keep_min_visible: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="A box cut by the crop keeping less of its area is dropped, and its visible part ignored by the "
        "loss.",
    )
    scale: float = Field(
        1.0, gt=0.0, description="Resize each frame by this factor before cropping (1: native resolution)."
    )

    @field_validator("size")
    @classmethod
    def _positive_tile(cls, value: tuple[int, int]) -> tuple[int, int]:
        if min(value) < 1:
            raise ValueError("both sides must be positive")
        return value


class DataConfig(_Section):
    # The names of multibox.dataset_formats.FORMATS, spelled out for the type checker (a test holds them equal).
    format: Literal["coco", "voc", "yolo", "txt", "openimages", "cognata"] = Field(
        "coco", description="Annotation format of train/val (multibox.dataset_formats)."
    )
    class_names: list[str] | Path | None = Field(
        None,
        description="voc/yolo/txt: class names in label order, a list or a names file "
        "(one a line, or a YOLO data .yaml with names:).",
    )
    classes: list[str] | None = Field(
        None, description="openimages: display names of the classes kept, in label order (all when not set)."
    )
    cognata: CognataConfig = Field(default_factory=CognataConfig, description="Cognata reader filters.")
    train: SplitPaths | None = Field(None, description="Training split.")
    val: SplitPaths | None = Field(
        None, description="Validation split; when missing, data.val_split of train is held out."
    )
    val_split: float = Field(
        0.0, ge=0.0, lt=1.0, description="Fraction of train held out for validation when no val set is given."
    )
    split_seed: int = Field(
        0, description="Seed of the val_split shuffle, so the held-out set is the same on every run."
    )
    max_skipped_fraction: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Stop when more than this fraction of a split's images is missing or unreadable (1: never, "
        "unless no image file of a split is there at all).",
    )
    input_size: tuple[int, int] = Field((300, 300), description="Network input [H, W]; need not be square.")
    input_short_side: int | None = Field(
        None,
        ge=32,
        description="Set input_size from the training images' median aspect ratio: this shorter side, "
        "the longer side to match (a multiple of 16); input_size is used when not set.",
    )
    batch_size: int = Field(8, ge=1, description="Images per batch (per device).")
    num_workers: int = Field(2, ge=0, description="Data-loader worker processes.")
    augment: Literal["ssd", "ssdlite", "none"] | list[dict[str, Any]] = Field(
        "ssd",
        description="Training augmentation preset, or a list of albumentations transforms with arguments "
        "([{name: HorizontalFlip, p: 0.5}, ...]; also ZoomOut, IoUCrop, PhotometricDistort); "
        "the resize to input_size is added.",
    )
    tiles: TilesConfig | None = Field(
        None,
        description="Train on crops of each frame ({size: [H, W], overlap, sampler, keep_min_visible}); none: whole "
        "frames.",
    )
    max_image_pixels: int = Field(
        89_478_485,
        ge=1,
        description="Images larger than this (width x height, read from the file's header) are skipped "
        "undecoded with a warning; Pillow's decompression-bomb limit (an 8 MP camera frame is far below).",
    )
    decode: Literal["cpu", "gpu"] = Field(
        "cpu",
        description="Where images are decoded and augmented: cpu (loader workers: OpenCV + albumentations) or gpu "
        "(workers only read the files; batched torchvision decode_jpeg and transforms.v2 presets "
        "on the training device).",
    )

    @field_validator("decode")
    @classmethod
    def _decode_preset(cls, value: str, info: Any) -> str:
        if value == "gpu" and isinstance(info.data.get("augment"), (list, tuple)):
            message = "gpu takes an augment preset (ssd, ssdlite, none), not a list of albumentations transforms"
            raise PydanticCustomError("decode", "{message}", {"message": message})
        if value == "gpu" and info.data.get("tiles") is not None:
            message = "gpu does not crop tiles; use decode: cpu with data.tiles"
            raise PydanticCustomError("decode", "{message}", {"message": message})
        return value

    @field_validator("augment", mode="before")
    @classmethod
    def _augment_form(cls, value: Any) -> Any:
        if not isinstance(value, (list, tuple)) and value not in ("ssd", "ssdlite", "none"):
            message = f"expected ssd, ssdlite, none or a list of {{name: Transform, ...}}, got {value!r}"
            raise PydanticCustomError("augment", "{message}", {"message": message})
        if isinstance(value, (list, tuple)):
            # albumentations is only imported when a list is given
            from multibox.data.transforms import build_augment_steps

            try:
                build_augment_steps(value)
            except MultiboxError as error:
                raise PydanticCustomError("augment", "{message}", {"message": str(error)}) from None
        return value

    @field_validator("input_size")
    @classmethod
    def _positive_size(cls, value: tuple[int, int]) -> tuple[int, int]:
        if min(value) < 32:
            raise ValueError("both sides must be at least 32 pixels")
        return value


class ModelConfig(_Section):
    name: Literal[
        "ssd300_vgg16",
        "ssd512_vgg16",
        "ssdlite320_mobilenet_v3_large",
        "ssdlite_mobilenet_v2",
        "ssd_mobilenet_v1",
        "ssd_resnet50",
        "ssd_resnet50_fpn",
        "custom",
    ] = Field("ssd300_vgg16", description="Detector architecture.")
    num_classes: int | None = Field(None, ge=1, description="Foreground classes; taken from the dataset when not set.")
    norm_momentum: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="BatchNorm running-stat momentum; the model's own when not set (SSDLite: 0.03, for long runs).",
    )
    width_mult: float = Field(
        1.0,
        gt=0.0,
        description="Channel multiplier of MobileNet backbones (torchvision's; the SSDLite extras keep their width).",
    )
    backbone_weights: str | None = Field(
        None,
        description="Backbone start: 'imagenet' (torchvision's file, from torch hub's cache, downloaded when missing), "
        "a classification state-dict file, or none for random init.",
    )
    weights: str | None = Field(
        None,
        description="Detector weights to start from: a multibox .ckpt, a torchvision detection state dict, or "
        "torchvision's COCO weights by name (torchvision:SSD300_VGG16_Weights.COCO_V1, "
        "torchvision:SSDLite320_MobileNet_V3_Large_Weights.COCO_V1; downloaded); head layers whose shapes differ "
        "(other classes) are re-initialised.",
    )
    pretrained_fallback: Literal["error", "scratch"] = Field(
        "error",
        description="When backbone_weights=imagenet cannot be had (no network, MULTIBOX_OFFLINE=1, none for this "
        "width_mult): error (exit 2, naming the URL and the cache path) or scratch (say so in one line, random init).",
    )
    scratch_width_mult: float | None = Field(
        None,
        gt=0.0,
        description="width_mult for a run that pretrained_fallback=scratch starts from scratch (a narrower MobileNet "
        "learns as well from random init in half the time on a CPU); saved so in the run's config.yaml. "
        "Null keeps width_mult.",
    )
    backbone: Literal["mobilenet_v2", "mobilenet_v3_large", "resnet50", "vgg16"] = Field(
        "mobilenet_v2", description="model.name=custom only: the classification network tapped for features."
    )
    strides: list[int] = Field(
        default_factory=lambda: [8, 16, 32, 64],
        description="model.name=custom only: prediction strides, powers of two from 8 "
        "(backbone taps 8/16/32, extra blocks beyond).",
    )
    head: Literal["ssd", "ssdlite"] = Field(
        "ssdlite", description="model.name=custom only: 3x3-conv SSD head or depthwise SSDLite head."
    )


class AnchorConfig(_Section):
    aspect_ratios: list[list[float]] | None = Field(
        None, description="Per level, the extra aspect ratios (2 means 2 and 1/2); model default when not set."
    )
    scales: list[float] | None = Field(
        None, description="Box scale per level plus one more, as fractions of the input's shorter side."
    )
    sizes: list[float] | None = Field(
        None, description="Box sizes in input pixels, per level plus one (MLCommons style); instead of scales."
    )
    box_sizes: list[list[float]] | None = Field(
        None,
        description="Per level, explicit square box sizes in input pixels (each with its aspect-ratio pairs); "
        "replaces scales/sizes.",
    )
    min_scale: float | None = Field(
        None, gt=0.0, description="Smallest scale when scales is not given (linear spacing to max_scale)."
    )
    max_scale: float | None = Field(None, gt=0.0, description="Largest scale when scales is not given.")
    steps: list[float] | None = Field(
        None, description="Per level, pixels between box centres; the feature map's stride when not set."
    )
    clip: bool = Field(True, description="Clip default boxes' width and height to the image, as torchvision does.")
    auto: bool = Field(
        False,
        description="Fit box_sizes and aspect_ratios to the training set's boxes before training "
        "(as `multibox anchors fit`) and log the coverage.",
    )

    @field_validator("aspect_ratios")
    @classmethod
    def _ratios_positive(cls, value: list[list[float]] | None) -> list[list[float]] | None:
        if value is not None and any(r <= 0 for level in value for r in level):
            raise ValueError("aspect ratios must be positive")
        return value


class LossConfig(_Section):
    neg_pos_ratio: float = Field(
        3.0, gt=0.0, description="Hard negatives kept per positive default box (loss.negatives=hard)."
    )
    negatives: Literal["hard", "dns"] = Field(
        "hard",
        description="Negative sampling of the multibox loss: "
        "hard = the neg_pos_ratio x positives highest-loss negatives; "
        "dns = every negative the model currently misclassifies (all negatives when none is), "
        "the scale-aware SSD project's dynamic sampling.",
    )
    minibatch_size: int | None = Field(
        None,
        ge=1,
        description="Cap on the default boxes (positives + negatives) that enter the classification loss per image.",
    )
    box: Literal["smooth_l1", "giou"] = Field(
        "smooth_l1", description="Localisation loss: smooth L1 on encoded offsets, or generalized IoU on decoded boxes."
    )
    iou_threshold: float = Field(
        0.5, gt=0.0, le=1.0, description="IoU at which a default box matches a ground-truth box."
    )
    class_weights: list[float] | Literal["auto"] | None = Field(
        None,
        description="Cross-entropy weight per foreground class (background is 1), "
        "or auto: from the training set's label frequencies (inverse frequency, normalised to mean 1).",
    )
    bbox_weight: float = Field(1.0, ge=0.0, description="Weight of the localisation term.")
    cls_weight: float = Field(1.0, ge=0.0, description="Weight of the classification (cross-entropy) term.")
    name: Literal["multibox", "focal"] = Field(
        "multibox",
        description="multibox: softmax cross-entropy with hard negatives; "
        "focal: sigmoid focal loss on all boxes (scores become sigmoids).",
    )
    focal_alpha: float = Field(
        0.25, ge=0.0, le=1.0, description="Focal loss: weight of the positive targets (negatives get 1 - alpha)."
    )
    focal_gamma: float = Field(2.0, ge=0.0, description="Focal loss: focusing exponent on (1 - p_t).")


class OptimizerConfig(_Section):
    name: Literal["sgd", "adamw"] = Field("sgd", description="Optimizer.")
    lr: float = Field(0.002, gt=0.0, description="Base learning rate.")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD momentum.")
    nesterov: bool = Field(False, description="Nesterov momentum (SGD).")
    weight_decay: float = Field(5e-4, ge=0.0, description="L2 weight decay.")


class SchedulerConfig(_Section):
    name: Literal["multistep", "cosine", "onecycle", "constant"] = Field(
        "multistep",
        description="Learning-rate schedule after warmup. "
        "onecycle: linear rise from warmup_factor over pct_start of the run, "
        "then cosine down to min_lr_ratio (warmup_steps is ignored).",
    )
    milestones: list[int] = Field(
        default_factory=list, description="Epochs at which multistep multiplies the rate by gamma."
    )
    gamma: float = Field(0.1, gt=0.0, description="Multistep decay factor.")
    warmup_steps: int = Field(0, ge=0, description="Optimizer steps of linear warmup.")
    warmup_factor: float = Field(0.001, gt=0.0, le=1.0, description="Learning-rate multiplier at step 0 of the warmup.")
    min_lr_ratio: float = Field(
        0.0, ge=0.0, le=1.0, description="Cosine and one-cycle floor as a fraction of the base rate."
    )
    pct_start: float = Field(
        0.3, gt=0.0, lt=1.0, description="onecycle: fraction of the run spent rising to the base rate."
    )


class MlflowConfig(_Section):
    """Where and how a run is logged to MLflow (train.loggers must include mlflow)."""

    tracking_uri: str | None = Field(
        None,
        description="MLflow tracking URI (http://host:5000, sqlite:///mlflow.db, postgresql://...); when not set, "
        "MLFLOW_TRACKING_URI, else MLflow 3's own default: sqlite:///mlflow.db in the working directory, artifacts "
        "in ./mlruns.",
    )
    experiment: str = Field("multibox", description="MLflow experiment the run is logged under (created when missing).")
    run_name: str | None = Field(None, description="MLflow run name; the name of train.output_dir when not set.")
    register_model: str | None = Field(
        None, description="After training, export best.ckpt to ONNX (with NMS) and register it under this model name."
    )


class WandbConfig(_Section):
    """Weights & Biases settings (train.loggers must include wandb); WANDB_MODE=offline keeps it off the network."""

    project: str = Field("multibox", description="W&B project.")
    entity: str | None = Field(None, description="W&B team or user; the account's default when not set.")
    offline: bool = Field(
        False, description="Write the run under train.output_dir/wandb only (sync later with `wandb sync`)."
    )


LoggerName = Literal["tensorboard", "csv", "mlflow", "wandb"]


def _default_loggers() -> list[LoggerName]:
    return ["csv", "tensorboard"]


class TrainConfig(_Section):
    epochs: int = Field(10, ge=1, description="Training epochs.")
    output_dir: Path = Field(Path("runs/exp"), description="Where config, checkpoints, logs and metrics go.")
    precision: Literal["32", "bf16-mixed", "16-mixed"] = Field("32", description="Lightning precision.")
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = Field("auto", description="Device type.")
    devices: int | str = Field(1, description="Devices per node (or 'auto'); data.batch_size is per device.")
    num_nodes: int = Field(1, ge=1, description="Machines in a multi-node run (torchrun or SLURM sets the ranks).")
    strategy: Literal["auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true"] = Field(
        "auto", description="Distribution strategy; auto is ddp when more than one device or node is used."
    )
    channels_last: bool = Field(
        False,
        description="Run the model in channels_last memory format: pays on GPUs "
        "with tensor cores and, on the CPU, for depthwise models (SSDLite step 1.3x faster), "
        "not for VGG16 (0.8x); see benchmarks/RESULTS.md.",
    )
    compile: bool = Field(False, description="torch.compile the network (slower start, faster steps on GPUs).")
    resume: Literal["never", "auto", "must"] = Field(
        "never",
        description="A run whose output_dir holds checkpoints: never = refuse (pass --resume), auto = continue from "
        "last.ckpt (start fresh when there is none; cron/SLURM/Kubernetes jobs), must = continue, fail when there is "
        "none.",
    )
    checkpoint_every_n_steps: int | None = Field(
        None, ge=1, description="Also write last.ckpt every n optimizer steps (besides every epoch)."
    )
    on_nan: Literal["stop", "skip"] = Field(
        "stop",
        description="A non-finite loss: stop training cleanly (no checkpoint of poisoned weights), or skip that batch.",
    )
    ema: bool = Field(
        False,
        description="Keep an exponential moving average of the weights; it is what validation and checkpoints use.",
    )
    ema_decay: float = Field(0.9998, gt=0.0, lt=1.0, description="EMA decay per step.")
    seed: int = Field(0, description="Global random seed.")
    gradient_clip: float | None = Field(None, gt=0.0, description="Clip the gradients' global norm to this value.")
    log_every_n_steps: int = Field(10, ge=1, description="Logging interval in optimizer steps.")
    progress: bool = Field(True, description="Show the progress bar.")
    report: bool = Field(
        True,
        description="After training, draw results.png and the evaluation report (report.md with PR curves, "
        "confusion matrix, gallery; ~2 s on a CPU). metrics.json is written either way: turn it off for sweeps.",
    )
    loggers: list[LoggerName] = Field(
        default_factory=_default_loggers,
        description="Where metrics go: tensorboard and csv (metrics.csv, results.png, `multibox runs ls --plot`) "
        "write into "
        "train.output_dir; mlflow and wandb need `pip install 'multibox[mlflow]'` / `'multibox[wandb]'`.",
    )
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig, description="MLflow tracking (train.loggers: mlflow).")
    wandb: WandbConfig = Field(default_factory=WandbConfig, description="Weights & Biases (train.loggers: wandb).")


class EvalConfig(_Section):
    score_threshold: float = Field(
        0.01, ge=0.0, lt=1.0, description="Detections below this score are dropped before NMS."
    )
    nms_threshold: float = Field(0.45, gt=0.0, le=1.0, description="IoU above which NMS suppresses a same-class box.")
    topk_candidates: int = Field(400, ge=1, description="Best boxes per class kept before NMS.")
    max_detections: int = Field(200, ge=1, description="Detections kept per image after NMS.")
    every_n_epochs: int = Field(
        1, ge=1, description="Run COCO evaluation on the val set every n epochs (and after the last)."
    )
    metric: Literal["coco", "voc07", "voc"] = Field(
        "coco",
        description="Besides COCO's: voc07 (VOC2007 11-point AP@0.5 per class, difficult boxes ignored: the SSD "
        "paper's) or voc (VOC2010+ all-point), as voc_map and voc_per_class in metrics.json, val/voc_map in the log.",
    )


class Config(_Section):
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    anchors: AnchorConfig = Field(default_factory=AnchorConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @model_validator(mode="after")
    def _one_scale_form(self) -> Config:
        if self.anchors.sizes is not None and self.anchors.scales is not None:
            raise ValueError("anchors: give either scales (fractions) or sizes (pixels), not both")
        return self

    @model_validator(mode="after")
    def _class_weights_match(self) -> Config:
        weights, n = self.loss.class_weights, self.model.num_classes
        if isinstance(weights, list) and n is not None and len(weights) != n:
            raise ValueError(f"loss.class_weights has {len(weights)} values but model.num_classes is {n}")
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (paths as strings), as written to config.yaml."""
        return self.model_dump(mode="json")


def _format_error(source: str, error: ValidationError) -> str:
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "(top level)"
    message = first["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):  # pydantic's wording around a validator's own message
        message = message.removeprefix(prefix)
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    elif first["type"] == "missing":
        message = "required key is missing"
    more = f" (and {error.error_count() - 1} more problems)" if error.error_count() > 1 else ""
    return f"{source}: {key}: {message}{more}"


def parse_config(raw: dict[str, Any], source: str = "config") -> Config:
    """Validate a plain dict; `source` names the file in error messages."""
    if not isinstance(raw, dict):
        raise MultiboxError(f"{source}: the top level must be a mapping of sections (data, model, ...)")
    try:
        return Config.model_validate(raw)
    except ValidationError as error:
        raise MultiboxError(_format_error(source, error)) from None


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read YAML or JSON (by extension; YAML otherwise) into a dict, with one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise MultiboxError(f"{path}: config file not found")
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as error:
        raise MultiboxError(f"{path}:{error.lineno}:{error.colno}: cannot parse config: {error.msg}") from None
    except yaml.MarkedYAMLError as error:  # line and column (1-based) of the problem, as editors count them
        mark = error.problem_mark or error.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        detail = " ".join(part for part in (error.context, error.problem) if part) or type(error).__name__
        raise MultiboxError(f"{where}: cannot parse config: {detail}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise MultiboxError(f"{path}: cannot parse config: {detail}") from None
    if data is None:  # an empty file is a mistake, not "all defaults"
        raise MultiboxError(f"{path}: config file is empty (see multibox/configs/ for complete examples)")
    return data


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings; values are parsed as YAML (numbers, lists, null)."""
    raw = json.loads(json.dumps(raw, default=str))  # deep copy of plain data
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise MultiboxError(f"override {item!r}: expected KEY=VALUE with a dotted key such as train.epochs=2")
        try:
            value = yaml.safe_load(text) if text else ""
        except yaml.YAMLError:
            value = text
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise MultiboxError(f"override {item!r}: {part} is not a section")
            node = child
        node[parts[-1]] = value
    return raw


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Load a config file (or the defaults when `path` is None) and apply overrides.

    Relative input paths written in the file resolve from the file's folder (a config travels with its
    data, as Ultralytics' dataset YAML does); paths given as KEY=VALUE overrides resolve from the working
    directory, where the user typed them. See :func:`resolve_paths`.
    """
    overrides = list(overrides or [])
    raw = read_config_file(path) if path is not None else {}
    raw = apply_overrides(raw, overrides)
    try:
        config = parse_config(raw, str(path) if path is not None else "config")
    except MultiboxError as error:
        source = str(path) if path is not None else "config"
        raise MultiboxError(_blame_override(str(error), source, overrides)) from None
    base = Path(path).expanduser().absolute().parent if path is not None else None
    return resolve_paths(config, base, {item.partition("=")[0].strip() for item in overrides})


def _blame_override(message: str, source: str, overrides: list[str]) -> str:
    """Name the command-line override, not the config file, when the key at fault is one the override set."""
    head, sep, rest = message.partition(": ")
    key = rest.split(": ", 1)[0] if sep and head == source else ""
    for item in reversed(overrides):
        name = item.partition("=")[0]
        if key and (key == name or key.startswith(name + ".") or name.startswith(key + ".")):
            return f"override {item}: {rest}"
    return message


# Input paths a config may hold, as dotted keys; train.output_dir is an output and resolves from the working directory.
def is_split_name(fmt: str, annotations: str | Path) -> bool:
    """VOC's ``trainval`` and Open Images' ``validation`` name a split of the root, not a file: a bare word
    without a folder or the format's file suffix (.txt split file, .csv annotations)."""
    suffix = FORMATS[fmt].split_suffix if fmt in FORMATS else None
    text = str(annotations)
    return suffix is not None and "/" not in text and "\\" not in text and Path(text).suffix.lower() != suffix


def _absolute(value: str | Path, base: Path | None) -> Path:
    """`value` made absolute against `base` (the working directory when None), normalised: no ``cfg/../data``."""
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = (base if base is not None else Path.cwd()) / path
    return Path(os.path.normpath(path))


def resolve_paths(config: Config, base: Path | None = None, overridden: set[str] | None = None) -> Config:
    """Make data and weight paths absolute and normalised, so a checkpoint's config works anywhere.

    Relative paths resolve from `base` (the config file's folder) unless their key (or a section above
    it) is in `overridden`, the keys set on the command line, which resolve from the working directory.
    VOC/Open Images split names stay names. With no `base`, everything resolves from the working directory.
    """
    overridden = overridden or set()

    def base_of(key: str) -> Path | None:
        parts = key.split(".")
        from_command_line = any(".".join(parts[:n]) in overridden for n in range(1, len(parts) + 1))
        return None if from_command_line else base

    for key in ("weights", "backbone_weights"):
        value = getattr(config.model, key)
        by_name = value is not None and (
            value.lower() in ("imagenet", "none", "null") or value.startswith("torchvision:")
        )
        if value is not None and not by_name:
            setattr(config.model, key, str(_absolute(value, base_of(f"model.{key}"))))
    if isinstance(config.data.class_names, Path):
        config.data.class_names = _absolute(config.data.class_names, base_of("data.class_names"))
    for name in ("train", "val"):
        split = getattr(config.data, name)
        if split is None:
            continue
        split.images = _absolute(split.images, base_of(f"data.{name}.images"))
        if split.annotations is not None and not is_split_name(config.data.format, split.annotations):
            split.annotations = _absolute(split.annotations, base_of(f"data.{name}.annotations"))
    return config


def save_config(config: Config, path: Path) -> None:
    """Write the resolved config as YAML (what `multibox train -c` accepts back)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")
