"""A detector: an SSD network bound to its default boxes and postprocess settings.

The network alone maps images to raw offsets and logits; the default boxes depend on
the input size (feature sizes come from a dry run of the backbone), so they are built
here once per configuration and carried as a buffer that follows the model's device.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from multibox.boxes.anchors import AnchorLayout, count_boxes, default_boxes, make_layout
from multibox.boxes.postprocess import PostprocessSettings, postprocess
from multibox.config import Config
from multibox.errors import MultiboxError
from multibox.models.factory import anchor_defaults, build_model, feature_map_sizes
from multibox.models.ssd import SSD
from multibox.models.weights import apply_weights, wants_backbone_weights


class SSDDetector(nn.Module):
    """SSD network + default boxes: ``forward`` gives raw outputs, ``detect`` gives boxes."""

    default_boxes: Tensor  # a buffer: moves with the module

    def __init__(self, model: SSD, default_cxcywh: Tensor, settings: PostprocessSettings) -> None:
        super().__init__()
        self.model = model
        self.settings = settings
        self.register_buffer("default_boxes", default_cxcywh, persistent=False)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """images (N, 3, H, W) float RGB in [0, 1] → (offsets (N, A, 4), logits (N, A, C))."""
        return self.model(images)

    @torch.no_grad()
    def detect(self, images: Tensor, original_sizes: Tensor) -> list[dict[str, Tensor]]:
        """Detections per image, boxes xyxy in each image's original (height, width) pixels."""
        box_regression, cls_logits = self.model(images)
        return self.postprocess(box_regression, cls_logits, original_sizes)

    def postprocess(
        self, box_regression: Tensor, cls_logits: Tensor, original_sizes: Tensor
    ) -> list[dict[str, Tensor]]:
        return postprocess(box_regression, cls_logits, self.default_boxes, original_sizes, self.settings)


@dataclass(frozen=True)
class DetectorSpec:
    """What the configuration resolved to: shown by summaries, written back into the config."""

    layout: AnchorLayout
    feature_sizes: list[tuple[int, int]]
    boxes_per_level: list[int]

    @property
    def num_boxes(self) -> int:
        return sum(self.boxes_per_level)


def _default_steps(steps: list[float] | None, input_size: tuple[int, int]) -> list[float] | None:
    """The paper's pixel steps hold for its nominal square input (the last step, 300 or 512);
    at any other size the feature maps' own strides place the centres instead."""
    if steps is None or tuple(input_size) != (steps[-1], steps[-1]):
        return None
    return steps


def resolve_layout(config: Config) -> AnchorLayout:
    """The config's anchors where given, the model's paper/torchvision defaults elsewhere.

    Box sizes come from the first form that is set: ``box_sizes`` (pixels per level),
    ``sizes`` (pixels, paper form), ``scales`` or ``min_scale``/``max_scale`` (fractions),
    then the model's own defaults in the same order. Pixels become fractions of the shorter side.
    """
    defaults = anchor_defaults(config.model.name)
    anchors = config.anchors
    short = min(config.data.input_size)
    ratios = anchors.aspect_ratios or defaults.aspect_ratios
    if config.model.name == "custom":  # no defaults: square boxes unless told, sizes always given
        ratios = anchors.aspect_ratios if anchors.aspect_ratios is not None else [[] for _ in config.model.strides]
        if (
            anchors.box_sizes is None
            and anchors.sizes is None
            and anchors.scales is None
            and (anchors.min_scale is None or anchors.max_scale is None)
        ):
            raise MultiboxError(
                "anchors: model.name=custom has no default boxes; give anchors.box_sizes "
                "(pixels per level, e.g. [[25], [38], [58], [87]]), anchors.sizes or anchors.scales"
            )
    steps = anchors.steps if anchors.steps is not None else _default_steps(defaults.steps, config.data.input_size)
    to_fractions = lambda values: [v / short for v in values]  # noqa: E731
    if anchors.box_sizes is not None:
        return make_layout(
            ratios, steps=steps, clip=anchors.clip, box_sizes=[to_fractions(s) for s in anchors.box_sizes]
        )
    if anchors.sizes is not None:
        return make_layout(ratios, to_fractions(anchors.sizes), steps=steps, clip=anchors.clip)
    if anchors.scales is not None or (anchors.min_scale is not None and anchors.max_scale is not None):
        return make_layout(ratios, anchors.scales, anchors.min_scale, anchors.max_scale, steps, anchors.clip)
    if defaults.box_sizes is not None:
        return make_layout(
            ratios, steps=steps, clip=anchors.clip, box_sizes=[to_fractions(s) for s in defaults.box_sizes]
        )
    return make_layout(ratios, defaults.scales, defaults.min_scale, defaults.max_scale, steps, anchors.clip)


def build_detector(
    config: Config, num_classes: int, load_weights: bool = True, empty: bool = False
) -> tuple[SSDDetector, DetectorSpec]:
    """Build the configured detector for `num_classes` foreground classes.

    It starts from ``model.backbone_weights`` / ``model.weights`` when set; ``load_weights=False``
    skips reading those files (for rebuilding a checkpoint, whose own weights replace them).
    ``empty`` leaves the parameters unallocated (meta) and uninitialised, for a state dict to be assigned
    (``load_state_dict(..., assign=True)``); buffers are real. Random init is wasted on a checkpoint's model and
    slow for large ones: torchvision's VGG16 builds and initialises its 124M-parameter classifier (~1.7 s).
    """
    layout = resolve_layout(config)
    m = config.model
    with parameters_on_meta() if empty else contextlib.nullcontext():
        model = _configured_model(config, layout, num_classes)
    apply_weights(model, m, load=load_weights and not empty)
    if config.model.norm_momentum is not None:
        set_norm_momentum(model, config.model.norm_momentum)
    input_size = config.data.input_size
    features = _feature_sizes(config, model)
    boxes = default_boxes(layout, features, input_size)
    e = config.eval
    # A focal-trained head scores each class with its own sigmoid (the background logit is unused).
    activation: Literal["softmax", "sigmoid"] = "sigmoid" if config.loss.name == "focal" else "softmax"
    settings = PostprocessSettings(e.score_threshold, e.nms_threshold, e.topk_candidates, e.max_detections, activation)
    return SSDDetector(model, boxes, settings), DetectorSpec(layout, features, count_boxes(layout, features))


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Within: every parameter a module registers goes to the meta device (no memory, init is a no-op); buffers
    stay real, so the non-persistent ones (image mean and std) keep their values."""
    register = nn.Module.register_parameter

    def on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and not param.is_meta:
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    setattr(nn.Module, "register_parameter", on_meta)  # noqa: B010 (a method swapped for the duration)
    try:
        yield
    finally:
        setattr(nn.Module, "register_parameter", register)  # noqa: B010


def set_norm_momentum(model: nn.Module, momentum: float) -> None:
    """Short runs need BatchNorm's running statistics to follow the quickly changing weights:
    with SSDLite's 0.03, eval-mode outputs trail training by hundreds of steps."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = momentum


def resolved_config(config: Config, spec: DetectorSpec, num_classes: int) -> Config:
    """A copy of the config with the anchors and class count actually used filled in."""
    resolved = config.model_copy(deep=True)
    resolved.model.num_classes = num_classes
    resolved.anchors.aspect_ratios = [list(r) for r in spec.layout.aspect_ratios]
    layout = spec.layout
    resolved.anchors.scales = list(layout.scales) if layout.scales is not None else None
    resolved.anchors.sizes = resolved.anchors.min_scale = resolved.anchors.max_scale = None
    if layout.box_sizes is not None:
        short = min(config.data.input_size)
        resolved.anchors.box_sizes = [[round(v * short, 6) for v in level] for level in layout.box_sizes]
    resolved.anchors.steps = list(spec.layout.steps) if spec.layout.steps is not None else None
    return resolved


def model_geometry(config: Config) -> tuple[AnchorLayout, list[tuple[int, int]]]:
    """The config's resolved layout and the model's feature-map sizes (network built on the meta device: no weights)."""
    layout = resolve_layout(config)
    with torch.device("meta"):
        model = _configured_model(config, layout, 1)
    return layout, _feature_sizes(config, model)


# Feature-map sizes by (model section, input size). The meta-device forward costs 0.3-0.4 s for a MobileNetV3
# (its elementwise ops run as Python decompositions on meta tensors), and a run, an eval or an export builds the
# same network several times. The whole model section is the key: anything that could change the backbone does.
_SIZES: dict[str, list[tuple[int, int]]] = {}


def _feature_sizes(config: Config, model: SSD) -> list[tuple[int, int]]:
    key = f"{config.model.model_dump_json()}|{list(config.data.input_size)}"
    if key not in _SIZES:
        if len(_SIZES) >= 64:
            _SIZES.clear()
        _SIZES[key] = feature_map_sizes(model, config.data.input_size)
    return list(_SIZES[key])


def _configured_model(config: Config, layout: AnchorLayout, num_classes: int) -> SSD:
    """``config.model`` built with random weights for `num_classes` foreground classes. The heads are sized from
    the resolved layout: explicit box_sizes give len(sizes) * (1 + 2 * len(ratios)) boxes per location."""
    m = config.model
    return build_model(
        m.name,
        num_classes + 1,
        [list(r) for r in layout.aspect_ratios],
        m.width_mult,
        num_anchors=layout.boxes_per_location(),
        backbone=m.backbone,
        strides=list(m.strides),
        head=m.head,
        pretrained_backbone=wants_backbone_weights(m),
    )
