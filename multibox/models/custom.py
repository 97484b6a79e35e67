"""A user-assembled SSD (``model.name: custom``): any supported backbone, the strides you ask for.

Scale-aware SSD (up2metric/scale-aware-SSD) picks the prediction levels and box sizes to fit the dataset's objects
instead of using a paper's fixed layout: e.g. MobileNetV2 tapped at strides 8, 16, 32 plus one
extra stride-64 level, one square box per location of 25/38/58/87 pixels at 512x512. So here
the levels are a list of strides and the default boxes always come from the config.

A backbone is tapped at the **last** layer of each stride it reaches (the richest features at
that resolution); it offers strides 8, 16 and 32 (C3-C5: stride-4 maps would multiply the boxes
by 4 for features that are too shallow to classify). Strides beyond 32 come from extra blocks,
one per doubling, each a 1x1 reduce then a 3x3 stride-2 conv, with BatchNorm + ReLU (SSD's extras).
The backbone stops at the deepest tap it needs, so ``strides: [8, 16]`` never runs its last stage.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn
from torchvision.models import mobilenet_v2, mobilenet_v3_large, resnet50, vgg16

from multibox.errors import MultiboxError
from multibox.models.heads import SSDHead, SSDLiteHead, xavier_init
from multibox.models.ssd import SSD

# ImageNet statistics: every backbone here is a torchvision classification network.
IMAGE_MEAN = [0.485, 0.456, 0.406]
IMAGE_STD = [0.229, 0.224, 0.225]

BACKBONES = ("mobilenet_v2", "mobilenet_v3_large", "resnet50", "vgg16")
HEADS = ("ssd", "ssdlite")
BACKBONE_STRIDES = (8, 16, 32)

# Channels of each extra block: 1x1 down to EXTRA_MID_CHANNELS, 3x3 stride 2 up to EXTRA_CHANNELS.
EXTRA_MID_CHANNELS = 128
EXTRA_CHANNELS = 256


def _backbone_layers(name: str, width_mult: float) -> tuple[nn.Sequential, dict[int, int]]:
    """A torchvision classifier's conv layers as one Sequential, and per stride the end (exclusive)
    of the last layer at that stride. Randomly initialised with torchvision's own init."""
    if name == "mobilenet_v2":
        # features[4:7] = 32 ch at stride 8, [7:14] = 64/96 ch at 16, [14:19] = 160/320 ch + the 1280-ch 1x1 at 32.
        return mobilenet_v2(weights=None, width_mult=width_mult).features, {8: 7, 16: 14, 32: 19}
    if name == "mobilenet_v3_large":
        # features[4:7] = 40 ch at 8, [7:13] = 80/112 ch at 16, [13:17] = 160 ch + the 960-ch 1x1 at 32.
        return mobilenet_v3_large(weights=None, width_mult=width_mult).features, {8: 7, 16: 13, 32: 17}
    if name == "resnet50":
        r = resnet50(weights=None)
        # layer2 (512 ch) at 8, layer3 (1024) at 16, layer4 (2048) at 32.
        layers = nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool, r.layer1, r.layer2, r.layer3, r.layer4)
        return layers, {8: 6, 16: 7, 32: 8}
    if name == "vgg16":
        # conv4_3 + ReLU (512 ch) at 8, conv5_3 + ReLU at 16, pool5 at 32.
        return vgg16(weights=None).features, {8: 23, 16: 30, 32: 31}
    raise MultiboxError(f"model.backbone: unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")


def check_strides(backbone: str, strides: list[int]) -> None:
    """One-line MultiboxError unless ``strides`` are increasing powers of two from 8 up."""
    if not strides:
        raise MultiboxError("model.strides: give at least one stride, e.g. [8, 16, 32, 64]")
    for s in strides:
        if s < BACKBONE_STRIDES[0] or s & (s - 1):
            raise MultiboxError(
                f"model.strides: {backbone} cannot give stride {s}; use powers of two from 8 "
                f"(it is tapped at 8, 16, 32; deeper strides get extra blocks)"
            )
    if any(b <= a for a, b in zip(strides, strides[1:], strict=False)):
        raise MultiboxError(f"model.strides: must be strictly increasing, got {list(strides)}")


def _last_conv_channels(module: nn.Module) -> int:
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)][-1].out_channels


def _extra_block(in_channels: int, norm_layer: Callable[..., nn.Module]) -> nn.Sequential:
    """1x1 reduce + norm + ReLU, then 3x3 stride-2 conv + norm + ReLU: halves the resolution."""
    return nn.Sequential(
        nn.Conv2d(in_channels, EXTRA_MID_CHANNELS, kernel_size=1, bias=False),
        norm_layer(EXTRA_MID_CHANNELS),
        nn.ReLU(inplace=True),
        nn.Conv2d(EXTRA_MID_CHANNELS, EXTRA_CHANNELS, kernel_size=3, stride=2, padding=1, bias=False),
        norm_layer(EXTRA_CHANNELS),
        nn.ReLU(inplace=True),
    )


class CustomFeatureExtractor(nn.Module):
    """A backbone cut into stages at its stride taps, plus extra blocks; returns the requested strides.

    Args:
        backbone: ``"mobilenet_v2"``, ``"mobilenet_v3_large"``, ``"resnet50"`` or ``"vgg16"``.
        strides: increasing powers of two from 8, one per prediction level.
        width_mult: MobileNet channel multiplier (must be 1.0 for the others).
        norm_layer: normalisation of the extra blocks.

    Attributes:
        stages: ``stages[k]`` runs the backbone from the previous tap to the k-th needed stride.
        extra: one block per stride above 32, up to the deepest requested.
        stage_strides, extra_strides: the stride each stage / extra block ends at.
        strides: the returned levels' strides; ``out_channels``: their channels.
    """

    def __init__(
        self,
        backbone: str,
        strides: list[int],
        width_mult: float = 1.0,
        norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        check_strides(backbone, strides)
        layers, taps = _backbone_layers(backbone, width_mult)
        deepest = max(strides)
        self.stage_strides = [s for s in BACKBONE_STRIDES if s <= deepest]
        ends = [taps[s] for s in self.stage_strides]
        self.stages = nn.ModuleList(
            nn.Sequential(*layers[start:end]) for start, end in zip([0, *ends], ends, strict=False)
        )
        channels = {s: _last_conv_channels(nn.Sequential(*layers[: taps[s]])) for s in self.stage_strides}

        self.extra_strides = []
        extra = []
        stride = self.stage_strides[-1]
        in_channels = channels[stride]
        while stride < deepest:
            stride *= 2
            extra.append(_extra_block(in_channels, norm_layer))
            self.extra_strides.append(stride)
            channels[stride] = in_channels = EXTRA_CHANNELS
        self.extra = nn.ModuleList(extra)
        xavier_init(self.extra)
        self.strides = list(strides)
        self.out_channels = [channels[s] for s in strides]

    def forward(self, x: Tensor) -> list[Tensor]:
        """``(N, 3, H, W)`` normalised images -> ``[(N, C_l, H_l, W_l)]``, one per requested stride."""
        by_stride = {}
        for stride, block in zip(self.stage_strides + self.extra_strides, [*self.stages, *self.extra], strict=True):
            x = block(x)
            by_stride[stride] = x
        return [by_stride[s] for s in self.strides]


def custom_ssd(
    num_classes: int,
    num_anchors: list[int],
    backbone: str = "mobilenet_v2",
    strides: list[int] | None = None,
    head: str = "ssdlite",
    width_mult: float = 1.0,
) -> SSD:
    """An SSD on ``backbone`` predicting at ``strides`` with an SSD or SSDLite head.

    Args:
        num_classes: classes including background.
        num_anchors: default boxes per location, one count per stride (from the configured anchors).
        backbone: one of :data:`BACKBONES`.
        strides: prediction strides, [8, 16, 32, 64] when None.
        head: ``"ssd"`` (3x3 convs, Xavier) or ``"ssdlite"`` (depthwise-separable, N(0, 0.03)).
        width_mult: MobileNet channel multiplier.

    Raises:
        MultiboxError: bad strides, backbone or head, or one anchor count per stride not given.
    """
    strides = list(strides or [8, 16, 32, 64])
    if head not in HEADS:
        raise MultiboxError(f"model.head: unknown head {head!r}; choose one of {', '.join(HEADS)}")
    extractor = CustomFeatureExtractor(backbone, strides, width_mult)
    if len(num_anchors) != len(strides):
        raise MultiboxError(f"anchors: model.strides has {len(strides)} levels but the anchors give {len(num_anchors)}")
    predictor: nn.Module
    if head == "ssd":
        predictor = SSDHead(extractor.out_channels, list(num_anchors), num_classes)
    else:
        predictor = SSDLiteHead(extractor.out_channels, list(num_anchors), num_classes, nn.BatchNorm2d)
    return SSD(extractor, predictor, IMAGE_MEAN, IMAGE_STD)
