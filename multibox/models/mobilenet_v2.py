"""SSDLite on MobileNetV2 (Sandler et al., 2018, section 6.2), laid out as pytorch-ssd's ``mb2-ssd-lite``.

The backbone is torchvision's MobileNetV2, split inside its last stride-2 block (``features[14]``):
the first level is that block's 1x1 expansion conv (stride 16, 576 channels at width 1.0), the
second the end of ``features`` (stride 32, 1280 channels). Four linear-bottleneck extra blocks
(MobileNetV2's own inverted residual, with pytorch-ssd's small expansion ratios) halve the
resolution down to 1x1, giving the 19/10/5/3/2/1 maps of pytorch-ssd at 300x300.

Heads are SSDLite's depthwise-separable predictors, except on the last level where, as in
pytorch-ssd, a plain 1x1 conv is used: on a 1x1 map a 3x3 depthwise conv sees only padding
outside its centre tap, so it would add parameters without adding context.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn
from torchvision.models import mobilenet_v2
from torchvision.models.mobilenetv2 import InvertedResidual

from multibox.models.heads import ScoringHead, _PairHead, _prediction_block, last_conv, xavier_init
from multibox.models.ssd import SSD, chain_outputs

# pytorch-ssd feeds (x * 255 - 127) / 128; on [0, 1] inputs that is mean 127/255, std 128/255.
IMAGE_MEAN = [127.0 / 255.0] * 3
IMAGE_STD = [128.0 / 255.0] * 3

# Default boxes per location: aspect ratios [2, 3] on all 6 levels (pytorch-ssd's priors).
MB2_SSDLITE_NUM_ANCHORS = (6, 6, 6, 6, 6, 6)

# (out_channels, expand_ratio) of the extra blocks, all stride 2: pytorch-ssd's mb2-ssd-lite.
# They are fixed widths (pytorch-ssd does not scale them with width_mult either).
EXTRA_BLOCKS = ((512, 0.2), (256, 0.25), (256, 0.5), (64, 0.25))


class SSDLiteFeatureExtractorMobileNetV2(nn.Module):
    """MobileNetV2 features split in the last stride-2 block, plus the extra blocks: 6 levels.

    Strides 16, 32, 64, 128, 256, 512 (19, 10, 5, 3, 2, 1 at 300x300).

    Args:
        mobilenet_features: a torchvision MobileNetV2's ``features``.
        norm_layer: normalisation of the extra blocks.

    Attributes:
        features: ``features[0]`` = stem ... the split block's 1x1 expansion conv (+ norm + ReLU6),
            ``features[1]`` = the rest of that block and of the backbone.
        extra: the 4 extra inverted-residual blocks.
        out_channels: channels of each returned level.
    """

    def __init__(self, mobilenet_features: nn.Sequential, norm_layer: Callable[..., nn.Module]) -> None:
        super().__init__()
        # The last downsampling block (features[14] in torchvision's layout) goes from stride 16 to 32.
        split = [i for i, block in enumerate(mobilenet_features) if getattr(block, "stride", 1) == 2][-1]
        block = mobilenet_features[split]
        assert isinstance(block, InvertedResidual)  # only torchvision's InvertedResidual blocks have a stride
        if block.use_res_connect:
            raise ValueError("the split block of the backbone must not be residual")
        expansion = block.conv[0]  # Conv2dNormActivation: 1x1 conv + norm + ReLU6 (pytorch-ssd's conv[:3])
        self.features = nn.Sequential(
            nn.Sequential(*mobilenet_features[:split], expansion),
            nn.Sequential(block.conv[1:], *mobilenet_features[split + 1 :]),
        )
        last_channels = last_conv(mobilenet_features).out_channels
        extra: list[nn.Module] = []
        in_channels = last_channels
        for out_channels, expand_ratio in EXTRA_BLOCKS:
            extra.append(InvertedResidual(in_channels, out_channels, 2, expand_ratio, norm_layer=norm_layer))
            in_channels = out_channels
        self.extra = nn.ModuleList(extra)
        xavier_init(self.extra)  # pytorch-ssd's init of everything that is not the classification backbone
        self.out_channels = [expansion.out_channels, last_channels] + [c for c, _ in EXTRA_BLOCKS]

    def forward(self, x: Tensor) -> list[Tensor]:
        """``(N, 3, H, W)`` normalised images -> ``[(N, C_l, H_l, W_l)]``, finest level first."""
        return chain_outputs([*self.features, *self.extra], x)


def mobilenet_v2_extractor(
    width_mult: float = 1.0, norm_layer: Callable[..., nn.Module] | None = None
) -> SSDLiteFeatureExtractorMobileNetV2:
    """Randomly initialised mb2-ssd-lite backbone.

    The MobileNetV2 keeps torchvision's own initialisation (Kaiming-normal convs, unit BatchNorm),
    the one it trains with from scratch; the extras get Xavier like pytorch-ssd.

    Args:
        width_mult: channel multiplier of the MobileNetV2 (rounded to multiples of 8 by
            torchvision; its last conv stays 1280 channels for ``width_mult <= 1``).
        norm_layer: defaults to plain ``BatchNorm2d`` (torchvision's MobileNetV2 and pytorch-ssd).
    """
    norm_layer = norm_layer or nn.BatchNorm2d
    mobilenet = mobilenet_v2(weights=None, width_mult=width_mult, norm_layer=norm_layer)
    return SSDLiteFeatureExtractorMobileNetV2(mobilenet.features, norm_layer)


class MobileNetV2SSDLiteHead(_PairHead):
    """pytorch-ssd's mb2-ssd-lite head: SSDLite predictors, a plain 1x1 conv on the last level.

    Every level but the last gets a 3x3 depthwise conv + norm + ReLU6 and a 1x1 conv; the last
    (1x1 at 300x300, where a 3x3 kernel sees only its centre) gets the 1x1 conv alone. All convs
    are Xavier-initialised, as pytorch-ssd does.

    Args:
        in_channels: channels of each feature level.
        num_anchors: default boxes per location of each level.
        num_classes: classes including background.
        norm_layer: normalisation after each depthwise conv.
    """

    def __init__(
        self, in_channels: list[int], num_anchors: list[int], num_classes: int, norm_layer: Callable[..., nn.Module]
    ) -> None:
        if len(in_channels) != len(num_anchors):
            raise ValueError(f"{len(in_channels)} feature levels but {len(num_anchors)} anchor counts")

        def predictors(columns: int) -> nn.ModuleList:
            levels = list(zip(in_channels, num_anchors, strict=True))
            modules: list[nn.Module] = [_prediction_block(c, columns * a, norm_layer) for c, a in levels[:-1]]
            last_channels, last_anchors = levels[-1]
            modules.append(nn.Conv2d(last_channels, columns * last_anchors, kernel_size=1))
            module_list = nn.ModuleList(modules)
            xavier_init(module_list)
            return module_list

        cls_blocks = predictors(num_classes)
        reg_blocks = predictors(4)
        super().__init__(ScoringHead(cls_blocks, num_classes), ScoringHead(reg_blocks, 4), num_classes, num_anchors)


def ssdlite_mobilenet_v2(num_classes: int, width_mult: float = 1.0, num_anchors: list[int] | None = None) -> SSD:
    """SSDLite with a MobileNetV2 backbone (pytorch-ssd's mb2-ssd-lite): 19/10/5/3/2/1 at 300x300.

    Args:
        num_classes: classes including background.
        width_mult: channel multiplier of the MobileNetV2 only; the extras and the heads of the
            last 5 levels keep pytorch-ssd's widths (the 1280-channel last conv does not shrink).
        num_anchors: default boxes per location per level; 6 everywhere (ratios [2, 3]) when None.
    """
    norm_layer = nn.BatchNorm2d
    backbone = mobilenet_v2_extractor(width_mult, norm_layer)
    num_anchors = list(num_anchors or MB2_SSDLITE_NUM_ANCHORS)
    if len(num_anchors) != len(backbone.out_channels):
        raise ValueError(f"{len(backbone.out_channels)} feature levels but {len(num_anchors)} anchor counts")
    head = MobileNetV2SSDLiteHead(backbone.out_channels, num_anchors, num_classes, norm_layer)
    return SSD(backbone, head, IMAGE_MEAN, IMAGE_STD)
