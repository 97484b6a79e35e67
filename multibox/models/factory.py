"""Models by name: their default-box layouts, construction from a config, and feature-map sizes.

This is the only place that knows which architectures exist; everything else (training,
export, the CLI) goes through :func:`build_model` and :func:`feature_map_sizes`, so default boxes
are always computed from the model's real feature maps rather than from hard-coded tables.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from multibox.errors import MultiboxError
from multibox.models import backbone_weights as imagenet
from multibox.models.backbone_weights import BackboneFamily
from multibox.models.custom import check_strides, custom_ssd
from multibox.models.fpn import ssd_resnet50_fpn
from multibox.models.mobilenet_v1 import ssd_mobilenet_v1
from multibox.models.mobilenet_v2 import ssdlite_mobilenet_v2
from multibox.models.mobilenet_v3 import ssdlite320_mobilenet_v3_large
from multibox.models.resnet import ssd_resnet50
from multibox.models.ssd import SSD
from multibox.models.vgg import ssd300_vgg16, ssd512_vgg16

# model.name=custom: levels are model.strides; its default boxes must come from the config.
DEFAULT_CUSTOM_STRIDES = (8, 16, 32, 64)


@dataclass(frozen=True)
class AnchorDefaults:
    """The paper's / torchvision's default-box layout of a model (``multibox.boxes.anchors.make_layout``'s inputs).

    Either ``scales`` (one per level plus one, fractions of the input's shorter side) or
    ``min_scale``/``max_scale`` (linear spacing) is set. ``steps`` are pixels between box centres
    per level at the model's nominal input size; None means the feature maps' strides.
    """

    aspect_ratios: list[list[float]]
    scales: list[float] | None
    min_scale: float | None
    max_scale: float | None
    steps: list[float] | None
    box_sizes: list[list[float]] | None = None  # per level, square sizes in pixels at the nominal input


# torchvision's ssd300_vgg16 (the paper's SSD300 with the COCO scales).
_SSD300_VGG16_BOXES = AnchorDefaults(
    aspect_ratios=[[2.0], [2.0, 3.0], [2.0, 3.0], [2.0, 3.0], [2.0], [2.0]],
    scales=[0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05],
    min_scale=None,
    max_scale=None,
    steps=[8.0, 16.0, 32.0, 64.0, 100.0, 300.0],
)

# torchvision ships no SSD512: the paper's (Caffe ssd_pascal_512) layout, 24,564 boxes at 512x512.
_SSD512_VGG16_BOXES = AnchorDefaults(
    aspect_ratios=[[2.0], [2.0, 3.0], [2.0, 3.0], [2.0, 3.0], [2.0, 3.0], [2.0], [2.0]],
    scales=[0.07, 0.15, 0.30, 0.45, 0.60, 0.75, 0.90, 1.05],
    min_scale=None,
    max_scale=None,
    steps=[8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0],
)

# torchvision's ssdlite320_mobilenet_v3_large.
_SSDLITE320_MOBILENET_V3_LARGE_BOXES = AnchorDefaults(
    aspect_ratios=[[2.0, 3.0] for _ in range(6)],
    scales=None,
    min_scale=0.2,
    max_scale=0.95,
    steps=None,
)

# pytorch-ssd's mb2-ssd-lite priors (its mobilenetv1_ssd_config): 300 px, maps 19/10/5/3/2/1,
# box sizes 60, 105, ..., 330 px = scales 0.2 ... 1.1, shrinkage 16 ... 300; 3000 boxes.
_SSDLITE_MOBILENET_V2_BOXES = AnchorDefaults(
    aspect_ratios=[[2.0, 3.0] for _ in range(6)],
    scales=[0.2, 0.35, 0.5, 0.65, 0.8, 0.95, 1.1],
    min_scale=None,
    max_scale=None,
    steps=[16.0, 32.0, 64.0, 100.0, 150.0, 300.0],
)

# pytorch-ssd's mb1-ssd: the same priors as mb2-ssd-lite.
_SSD_MOBILENET_V1_BOXES = AnchorDefaults(
    aspect_ratios=[[2.0, 3.0] for _ in range(6)],
    scales=[0.2, 0.35, 0.5, 0.65, 0.8, 0.95, 1.1],
    min_scale=None,
    max_scale=None,
    steps=[16.0, 32.0, 64.0, 100.0, 150.0, 300.0],
)

# NVIDIA DeepLearningExamples' SSD300-ResNet50 on COCO: scales 21, 45, 99, 153, 207, 261, 315 px
# of 300 (SSD300's layout), 8,732 boxes at 300x300.
_SSD_RESNET50_BOXES = AnchorDefaults(
    aspect_ratios=[[2.0], [2.0, 3.0], [2.0, 3.0], [2.0, 3.0], [2.0], [2.0]],
    scales=[21 / 300, 45 / 300, 99 / 300, 153 / 300, 207 / 300, 261 / 300, 315 / 300],
    min_scale=None,
    max_scale=None,
    steps=[8.0, 16.0, 32.0, 64.0, 100.0, 300.0],
)

# MindSpore's SSD-ResNet50-FPN (RetinaNet anchors): per level, base size 4 x stride at octave
# scales 2^0 and 2^0.5, each with ratios 1, 2, 1/2 -> 6 boxes per location, 51,150 at 640x640.
# Pixel sizes, so they stay 4 x stride at any input; centres on the feature strides.
_SSD_RESNET50_FPN_BOXES = AnchorDefaults(
    aspect_ratios=[[2.0] for _ in range(5)],
    scales=None,
    min_scale=None,
    max_scale=None,
    steps=None,
    box_sizes=[[4.0 * s, 4.0 * s * 2**0.5] for s in (8, 16, 32, 64, 128)],
)

# No defaults: the levels are model.strides and the boxes must be given (anchors.box_sizes, ...).
_CUSTOM_BOXES = AnchorDefaults(aspect_ratios=[], scales=None, min_scale=None, max_scale=None, steps=None)


@dataclass(frozen=True)
class BuildArgs:
    """What a builder gets: build_model's arguments, checked."""

    num_classes: int
    num_anchors: list[int]
    width_mult: float
    backbone: str
    strides: list[int]
    head: str
    pretrained_backbone: bool


@dataclass(frozen=True)
class ModelSpec:
    """One architecture: its builder, the default boxes it was designed with, whether it takes a width, and
    where its backbone's ImageNet weights come from (``model.backbone_weights: imagenet``; custom: by
    ``model.backbone``; None: no classification network to start from)."""

    build: Callable[[BuildArgs], SSD]
    anchors: AnchorDefaults
    width_mult: bool = False  # a MobileNet width multiplier (custom: when its backbone is a MobileNet)
    imagenet: BackboneFamily | dict[str, BackboneFamily] | None = None


# Every model multibox builds. Adding one is an entry here plus its module (its ImageNet mapping, if any, in
# backbone_weights.py; its name in config.py's ModelConfig.name: tests/models/test_model_zoo.py holds the two
# equal and trains every entry one step).
MODELS: dict[str, ModelSpec] = {
    "ssd300_vgg16": ModelSpec(
        lambda a: ssd300_vgg16(a.num_classes, a.num_anchors), _SSD300_VGG16_BOXES, imagenet=imagenet.VGG16_CAFFE
    ),
    "ssd512_vgg16": ModelSpec(
        lambda a: ssd512_vgg16(a.num_classes, a.num_anchors), _SSD512_VGG16_BOXES, imagenet=imagenet.VGG16_CAFFE
    ),
    "ssdlite320_mobilenet_v3_large": ModelSpec(
        lambda a: ssdlite320_mobilenet_v3_large(
            a.num_classes, a.width_mult, a.num_anchors, reduced_tail=not a.pretrained_backbone
        ),
        _SSDLITE320_MOBILENET_V3_LARGE_BOXES,
        width_mult=True,
        imagenet=imagenet.SSDLITE_MOBILENET_V3_LARGE,
    ),
    "ssdlite_mobilenet_v2": ModelSpec(
        lambda a: ssdlite_mobilenet_v2(a.num_classes, a.width_mult, a.num_anchors),
        _SSDLITE_MOBILENET_V2_BOXES,
        width_mult=True,
        imagenet=imagenet.SSDLITE_MOBILENET_V2,
    ),
    "ssd_mobilenet_v1": ModelSpec(
        lambda a: ssd_mobilenet_v1(a.num_classes, a.width_mult, a.num_anchors),
        _SSD_MOBILENET_V1_BOXES,
        width_mult=True,
    ),
    "ssd_resnet50": ModelSpec(
        lambda a: ssd_resnet50(a.num_classes, a.num_anchors), _SSD_RESNET50_BOXES, imagenet=imagenet.RESNET50
    ),
    "ssd_resnet50_fpn": ModelSpec(
        lambda a: ssd_resnet50_fpn(a.num_classes, a.num_anchors),
        _SSD_RESNET50_FPN_BOXES,
        imagenet=imagenet.RESNET50_FPN,
    ),
    "custom": ModelSpec(
        lambda a: custom_ssd(a.num_classes, a.num_anchors, a.backbone, a.strides, a.head, a.width_mult),
        _CUSTOM_BOXES,
        width_mult=True,
        imagenet=imagenet.CUSTOM,
    ),
}
MODEL_NAMES = tuple(MODELS)
_NUM_LEVELS = {name: len(spec.anchors.aspect_ratios) for name, spec in MODELS.items()}


def _check_name(name: str) -> None:
    if name not in MODEL_NAMES:
        raise MultiboxError(f"model.name: unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")


def anchor_defaults(name: str) -> AnchorDefaults:
    """The default-box layout the model ``name`` was designed with (a fresh copy; safe to modify)."""
    _check_name(name)
    return copy.deepcopy(MODELS[name].anchors)


def build_model(
    name: str,
    num_classes: int,
    aspect_ratios: list[list[float]],
    width_mult: float = 1.0,
    *,
    num_anchors: list[int] | None = None,
    backbone: str = "mobilenet_v2",
    strides: list[int] | None = None,
    head: str = "ssdlite",
    pretrained_backbone: bool = False,
) -> SSD:
    """A randomly initialised SSD whose heads fit the given default-box layout.

    Args:
        name: one of :data:`MODEL_NAMES`.
        num_classes: classes including background (so at least 2).
        aspect_ratios: per feature level, the extra aspect ratios (they fix the number of levels).
        width_mult: channel multiplier of MobileNet backbones; must stay 1.0 for VGG/ResNet models.
        num_anchors: boxes per location per level, ``AnchorLayout.boxes_per_location()``; when None,
            the paper form ``2 + 2 * len(aspect_ratios[k])`` (two squares, then r and 1/r) — wrong
            for explicit ``box_sizes`` layouts, so :func:`multibox.models.detector.build_detector`
            always passes it.
        backbone, strides, head: ``model.backbone`` / ``model.strides`` / ``model.head`` of
            ``name="custom"`` (ignored otherwise); strides default to :data:`DEFAULT_CUSTOM_STRIDES`.
        pretrained_backbone: the backbone will load ImageNet weights, so it takes the classifier's
            architecture: ssdlite320_mobilenet_v3_large keeps MobileNetV3's full tail, as torchvision does.

    Raises:
        MultiboxError: unknown name, a wrong number of levels, or an option the model does not take.
    """
    _check_name(name)
    if num_classes < 2:
        raise MultiboxError(
            f"model.num_classes: need at least 1 foreground class plus background, got {num_classes} in all"
        )
    if name == "custom":
        strides = list(strides or DEFAULT_CUSTOM_STRIDES)
        check_strides(backbone, strides)
        levels = len(strides)
    else:
        levels = _NUM_LEVELS[name]
    if len(aspect_ratios) != levels:
        raise MultiboxError(
            f"anchors.aspect_ratios: {name} has {levels} feature levels, "
            f"but {len(aspect_ratios)} lists of ratios were given"
        )
    for level, ratios in enumerate(aspect_ratios):
        if any(not r > 0 for r in ratios):
            raise MultiboxError(f"anchors.aspect_ratios[{level}]: ratios must be positive, got {list(ratios)}")
    if not width_mult > 0:
        raise MultiboxError(f"model.width_mult: must be positive, got {width_mult}")
    has_width = MODELS[name].width_mult and not (name == "custom" and backbone in ("resnet50", "vgg16"))
    if width_mult != 1.0 and not has_width:
        what = f"custom with model.backbone={backbone}" if name == "custom" else name
        raise MultiboxError(
            f"model.width_mult: {what} has no width multiplier (only MobileNet models do), got {width_mult}"
        )
    if num_anchors is None:
        num_anchors = [2 + 2 * len(ratios) for ratios in aspect_ratios]
    num_anchors = [int(a) for a in num_anchors]
    if len(num_anchors) != levels or min(num_anchors) < 1:
        raise MultiboxError(
            f"anchors: {name} needs at least 1 box per location on each of {levels} levels, got {num_anchors}"
        )
    if name == "ssd_resnet50_fpn" and len(set(num_anchors)) != 1:
        raise MultiboxError(
            "anchors: ssd_resnet50_fpn's shared head needs the same number of boxes per location on every level, "
            f"got {num_anchors}"
        )

    args = BuildArgs(num_classes, num_anchors, width_mult, backbone, list(strides or []), head, pretrained_backbone)
    return MODELS[name].build(args)


def _meta_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` whose parameters and buffers live on the meta device.

    Pre-filling deepcopy's memo with meta stand-ins means no real weights are ever copied, so this
    is as fast for a 35M-parameter VGG as for a tiny model, and ``module`` itself is untouched.
    """
    memo: dict[int, object] = {}
    for p in module.parameters():
        memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
    for b in module.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    return copy.deepcopy(module, memo)


def feature_map_sizes(model: SSD, input_size: tuple[int, int]) -> list[tuple[int, int]]:
    """``(H_l, W_l)`` of each feature level for an ``(H, W)`` input, finest level first.

    Runs a meta-device copy of ``model.backbone`` (shapes only, no arithmetic), so it costs
    milliseconds even for 8-megapixel inputs and leaves ``model`` (weights, device, train/eval
    mode, BatchNorm statistics) unchanged.

    Raises:
        MultiboxError: the input is too small for the backbone (some level would be empty).
    """
    height, width = int(input_size[0]), int(input_size[1])
    if height < 1 or width < 1:
        raise MultiboxError(f"data.input_size: sides must be positive, got {height}x{width}")
    backbone = _meta_copy(model.backbone).eval()  # eval: BatchNorm on 1x1 maps would refuse a batch of 1
    try:
        with torch.no_grad():
            features = backbone(torch.empty(1, 3, height, width, device="meta"))
    except RuntimeError as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise MultiboxError(
            f"data.input_size: {height}x{width} is too small for this model's backbone ({reason})"
        ) from None
    return [(int(f.shape[-2]), int(f.shape[-1])) for f in features]
