"""SSDLite on MobileNetV3-Large (Howard et al., 2019, section 6.3; Sandler et al., 2018, section 6.2).

The backbone is split inside the C4 block (stride 16): the first level is the output of that
block's 1x1 expansion conv, the second the backbone's last conv (stride 32). Four depthwise
"extra" blocks halve the resolution down to 1x1. Heads are depthwise-separable (SSDLite).

Layout, names and initialisation follow torchvision's ``ssdlite320_mobilenet_v3_large`` built
without pretrained weights, so its state dicts load here with ``strict=True``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import Tensor, nn
from torchvision.models import mobilenet_v3_large
from torchvision.models.mobilenetv3 import InvertedResidual
from torchvision.ops.misc import Conv2dNormActivation

from multibox.models.heads import SSDLiteHead, last_conv, normal_init
from multibox.models.ssd import SSD

# Scale [0, 1] inputs to [-1, 1], as torchvision's SSDLite does.
IMAGE_MEAN = [0.5, 0.5, 0.5]
IMAGE_STD = [0.5, 0.5, 0.5]

# Default boxes per location: aspect ratios [2, 3] on all 6 levels.
SSDLITE_NUM_ANCHORS = (6, 6, 6, 6, 6, 6)


def default_norm_layer() -> Callable[..., nn.Module]:
    """BatchNorm with torchvision's SSDLite settings (eps=0.001, momentum=0.03, i.e. TF's 0.97 decay)."""
    return partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)


def _extra_block(in_channels: int, out_channels: int, norm_layer: Callable[..., nn.Module]) -> nn.Sequential:
    """1x1 to half the channels, 3x3 depthwise stride 2, 1x1 to ``out_channels``; each with norm + ReLU6."""
    mid = out_channels // 2
    return nn.Sequential(
        Conv2dNormActivation(in_channels, mid, kernel_size=1, norm_layer=norm_layer, activation_layer=nn.ReLU6),
        Conv2dNormActivation(
            mid, mid, kernel_size=3, stride=2, groups=mid, norm_layer=norm_layer, activation_layer=nn.ReLU6
        ),
        Conv2dNormActivation(mid, out_channels, kernel_size=1, norm_layer=norm_layer, activation_layer=nn.ReLU6),
    )


class SSDLiteFeatureExtractorMobileNet(nn.Module):
    """MobileNet features split at C4, plus 4 extra blocks: 6 levels, strides 16, 32, 64, 128, 256, 512.

    Args:
        mobilenet_features: a MobileNetV3's ``features`` (its blocks marked ``_is_cn`` where they downsample).
        norm_layer: normalisation of the extra blocks.
        extras_width_mult: channel multiplier of the extra blocks (depth ``max(min_depth, int(d * m))``
            for d in 512, 256, 256, 128). torchvision's factory never passes its ``width_mult`` here,
            so its extras are always full width; the default keeps that layout.
        min_depth: smallest channel count of an extra block.

    Attributes (state-dict names as in torchvision):
        features: ``features[0]`` = start ... C4's expansion conv, ``features[1]`` = the rest of the backbone.
        extra: the 4 extra blocks.
        out_channels: channels of each returned level.
    """

    def __init__(
        self,
        mobilenet_features: nn.Sequential,
        norm_layer: Callable[..., nn.Module],
        extras_width_mult: float = 1.0,
        min_depth: int = 16,
    ) -> None:
        super().__init__()
        # Downsampling blocks C1..C4; the last one is C4 (stride 16 -> 32 inside it).
        c4_pos = [i for i, block in enumerate(mobilenet_features) if getattr(block, "_is_cn", False)][-1]
        c4 = mobilenet_features[c4_pos]
        assert isinstance(c4, InvertedResidual)  # only torchvision's InvertedResidual blocks have _is_cn
        if c4.use_res_connect:
            raise ValueError("the C4 block of the backbone must not be residual")
        self.features = nn.Sequential(
            nn.Sequential(*mobilenet_features[:c4_pos], c4.block[0]),  # up to C4's 1x1 expansion (stride 16)
            nn.Sequential(c4.block[1:], *mobilenet_features[c4_pos + 1 :]),  # C4's depthwise ... last conv (stride 32)
        )

        def depth(d: int) -> int:
            return max(min_depth, int(d * extras_width_mult))

        last_channels = last_conv(mobilenet_features).out_channels
        self.extra = nn.ModuleList(
            [
                _extra_block(last_channels, depth(512), norm_layer),
                _extra_block(depth(512), depth(256), norm_layer),
                _extra_block(depth(256), depth(256), norm_layer),
                _extra_block(depth(256), depth(128), norm_layer),
            ]
        )
        normal_init(self.extra)
        self.out_channels = [c4.block[0].out_channels, last_channels, depth(512), depth(256), depth(256), depth(128)]

    def forward(self, x: Tensor) -> list[Tensor]:
        """``(N, 3, H, W)`` normalised images -> ``[(N, C_l, H_l, W_l)]``, finest level first."""
        outputs = []
        for block in self.features:
            x = block(x)
            outputs.append(x)
        for block in self.extra:
            x = block(x)
            outputs.append(x)
        return outputs


def mobilenet_v3_large_extractor(
    width_mult: float = 1.0, norm_layer: Callable[..., nn.Module] | None = None, reduced_tail: bool = True
) -> SSDLiteFeatureExtractorMobileNet:
    """Randomly initialised SSDLite MobileNetV3-Large backbone, as torchvision builds it.

    ``reduced_tail`` halves the channels after C4 (MobileNetV3 paper, Table 6: cheaper, same
    detection accuracy); torchvision enables it whenever no pretrained backbone is used, and keeps the full
    tail of its ImageNet classifiers otherwise (``reduced_tail=False``). All convs
    get N(0, 0.03) weights, which trains better from scratch than MobileNet's Kaiming init.

    Args:
        width_mult: channel multiplier of the MobileNet (rounded to multiples of 8 by torchvision).
        norm_layer: defaults to :func:`default_norm_layer`.
        reduced_tail: False for a backbone that will load an ImageNet classifier's weights.
    """
    norm_layer = norm_layer or default_norm_layer()
    mobilenet = mobilenet_v3_large(
        weights=None, norm_layer=norm_layer, reduced_tail=reduced_tail, width_mult=width_mult
    )
    normal_init(mobilenet)
    return SSDLiteFeatureExtractorMobileNet(mobilenet.features, norm_layer)


def ssdlite320_mobilenet_v3_large(
    num_classes: int, width_mult: float = 1.0, num_anchors: list[int] | None = None, reduced_tail: bool = True
) -> SSD:
    """SSDLite320 with a MobileNetV3-Large backbone: 6 levels, 20/10/5/3/2/1 at 320x320.

    Args:
        num_classes: classes including background.
        width_mult: channel multiplier of the MobileNet backbone only (the extras and heads follow
            from its channels), exactly as torchvision's ``width_mult`` keyword. 0.5 at a 128x128
            input is small enough to train on a CPU in minutes.
        num_anchors: default boxes per location per level; 6 everywhere (ratios [2, 3]) when None.
        reduced_tail: see :func:`mobilenet_v3_large_extractor`; False to start from ImageNet weights.
    """
    norm_layer = default_norm_layer()
    backbone = mobilenet_v3_large_extractor(width_mult, norm_layer, reduced_tail)
    num_anchors = list(num_anchors or SSDLITE_NUM_ANCHORS)
    if len(num_anchors) != len(backbone.out_channels):
        raise ValueError(f"{len(backbone.out_channels)} feature levels but {len(num_anchors)} anchor counts")
    head = SSDLiteHead(backbone.out_channels, num_anchors, num_classes, norm_layer)
    return SSD(backbone, head, IMAGE_MEAN, IMAGE_STD)
