"""SSD on MobileNetV1 (Howard et al., 2017), laid out as pytorch-ssd's ``mb1-ssd``.

torchvision has no MobileNetV1, so it is written here: a 3x3 stride-2 conv, then 13
depthwise-separable blocks (3x3 depthwise + BN + ReLU, 1x1 pointwise + BN + ReLU). SSD takes the
11th block's output (stride 16, 512 channels) and the 13th's (stride 32, 1024 channels), then four
plain "extra" blocks (1x1 conv + ReLU, 3x3 stride-2 conv + ReLU) halve the resolution down to 1x1:
19/10/5/3/2/1 at 300x300. Heads are the original SSD's full 3x3 convs.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn
from torchvision.ops.misc import Conv2dNormActivation

from multibox.models.heads import SSDHead, last_conv, xavier_init
from multibox.models.ssd import SSD, chain_outputs

# pytorch-ssd feeds (x * 255 - 127) / 128; on [0, 1] inputs that is mean 127/255, std 128/255.
IMAGE_MEAN = [127.0 / 255.0] * 3
IMAGE_STD = [128.0 / 255.0] * 3

# Default boxes per location: aspect ratios [2, 3] on all 6 levels (pytorch-ssd's priors).
MB1_SSD_NUM_ANCHORS = (6, 6, 6, 6, 6, 6)

# (out_channels, stride) of the 13 depthwise-separable blocks at width 1.0 (the paper's Table 1).
MOBILENET_V1_BLOCKS = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),  # the 11th block ends stride 16: SSD's first level
    (1024, 2),
    (1024, 1),
)

# (bottleneck 1x1 channels, output channels) of the extra blocks: pytorch-ssd's mb1-ssd, fixed widths.
EXTRA_BLOCKS = ((256, 512), (128, 256), (128, 256), (128, 256))


def _depth(channels: int, width_mult: float, min_depth: int = 8) -> int:
    """Scaled channel count, never below ``min_depth`` (TF-slim's ``depth_multiplier`` rule)."""
    return max(min_depth, int(channels * width_mult))


def _separable_block(
    in_channels: int, out_channels: int, stride: int, norm_layer: Callable[..., nn.Module]
) -> nn.Sequential:
    """3x3 depthwise conv + norm + ReLU, then 1x1 pointwise conv + norm + ReLU (convs without bias)."""
    return nn.Sequential(
        Conv2dNormActivation(
            in_channels,
            in_channels,
            kernel_size=3,
            stride=stride,
            groups=in_channels,
            norm_layer=norm_layer,
            activation_layer=nn.ReLU,
        ),
        Conv2dNormActivation(in_channels, out_channels, kernel_size=1, norm_layer=norm_layer, activation_layer=nn.ReLU),
    )


def mobilenet_v1_features(width_mult: float = 1.0, norm_layer: Callable[..., nn.Module] | None = None) -> nn.Sequential:
    """MobileNetV1's 14 conv blocks (no pooling or classifier), randomly initialised.

    Initialisation follows torchvision's MobileNets (Kaiming-normal fan-out convs, unit
    BatchNorm): the same recipe as the MobileNetV2 backbone, so the models compare fairly.

    Args:
        width_mult: channel multiplier (``max(8, int(c * width_mult))`` channels).
        norm_layer: defaults to plain ``BatchNorm2d``.
    """
    norm_layer = norm_layer or nn.BatchNorm2d
    in_channels = _depth(32, width_mult)
    blocks: list[nn.Module] = [
        Conv2dNormActivation(3, in_channels, kernel_size=3, stride=2, norm_layer=norm_layer, activation_layer=nn.ReLU)
    ]
    for channels, stride in MOBILENET_V1_BLOCKS:
        out_channels = _depth(channels, width_mult)
        blocks.append(_separable_block(in_channels, out_channels, stride, norm_layer))
        in_channels = out_channels
    features = nn.Sequential(*blocks)
    for module in features.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out")
        elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    return features


def _extra_block(in_channels: int, mid_channels: int, out_channels: int) -> nn.Sequential:
    """1x1 conv + ReLU, then 3x3 stride-2 conv + ReLU, both with bias and no norm (pytorch-ssd's mb1-ssd)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, mid_channels, kernel_size=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(mid_channels, out_channels, kernel_size=3, stride=2, padding=1),
        nn.ReLU(inplace=True),
    )


class SSDFeatureExtractorMobileNetV1(nn.Module):
    """MobileNetV1 features split after the 11th separable block, plus 4 extra blocks: 6 levels.

    Strides 16, 32, 64, 128, 256, 512 (19, 10, 5, 3, 2, 1 at 300x300).

    Args:
        mobilenet_features: the 14 blocks of :func:`mobilenet_v1_features`.

    Attributes:
        features: ``features[0]`` = stem ... 11th separable block (stride 16),
            ``features[1]`` = the 12th and 13th blocks (stride 32).
        extra: the 4 extra blocks.
        out_channels: channels of each returned level.
    """

    def __init__(self, mobilenet_features: nn.Sequential) -> None:
        super().__init__()
        if len(mobilenet_features) != 14:
            raise ValueError(f"expected MobileNetV1's 14 blocks, got {len(mobilenet_features)}")
        self.features = nn.Sequential(
            nn.Sequential(*mobilenet_features[:12]),  # pytorch-ssd's source layer 12
            nn.Sequential(*mobilenet_features[12:]),
        )
        c4_channels = last_conv(mobilenet_features[11]).out_channels  # the pointwise conv
        last_channels = last_conv(mobilenet_features[13]).out_channels
        extra = []
        in_channels = last_channels
        for mid_channels, out_channels in EXTRA_BLOCKS:
            extra.append(_extra_block(in_channels, mid_channels, out_channels))
            in_channels = out_channels
        self.extra = nn.ModuleList(extra)
        xavier_init(self.extra)  # pytorch-ssd's init of everything that is not the classification backbone
        self.out_channels = [c4_channels, last_channels] + [c for _, c in EXTRA_BLOCKS]

    def forward(self, x: Tensor) -> list[Tensor]:
        """``(N, 3, H, W)`` normalised images -> ``[(N, C_l, H_l, W_l)]``, finest level first."""
        return chain_outputs([*self.features, *self.extra], x)


def ssd_mobilenet_v1(num_classes: int, width_mult: float = 1.0, num_anchors: list[int] | None = None) -> SSD:
    """SSD with a MobileNetV1 backbone (pytorch-ssd's mb1-ssd): 19/10/5/3/2/1 at 300x300.

    Args:
        num_classes: classes including background.
        width_mult: channel multiplier of the MobileNetV1 only; the extras keep pytorch-ssd's
            widths, and the first two heads follow the backbone's channels.
        num_anchors: default boxes per location per level; 6 everywhere (ratios [2, 3]) when None.
    """
    backbone = SSDFeatureExtractorMobileNetV1(mobilenet_v1_features(width_mult))
    num_anchors = list(num_anchors or MB1_SSD_NUM_ANCHORS)
    if len(num_anchors) != len(backbone.out_channels):
        raise ValueError(f"{len(backbone.out_channels)} feature levels but {len(num_anchors)} anchor counts")
    head = SSDHead(backbone.out_channels, num_anchors, num_classes)
    return SSD(backbone, head, IMAGE_MEAN, IMAGE_STD)
