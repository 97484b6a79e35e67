"""SSD300 / SSD512 on VGG16 (Liu et al., 2016, Fig. 2 and footnote 5).

VGG16's conv layers up to conv5_3, with pool5 turned into a 3x3/stride-1 pool and fc6/fc7 turned
into convs (fc6 dilated by 6, as in DeepLab's "atrous" VGG), then a few extra 1x1 -> 3x3 blocks
that halve the resolution. Predictions come from conv4_3 (L2-normalised with a learnt per-channel
scale, because its activations are much larger than the deeper layers'), fc7 and each extra block.

Module layout and names follow torchvision's ``SSDFeatureExtractorVGG`` exactly, so torchvision
checkpoints (e.g. the COCO ``ssd300_vgg16``) load into :func:`ssd300_vgg16` with ``strict=True``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import vgg16

from multibox.models.heads import SSDHead, last_conv, xavier_init
from multibox.models.ssd import SSD

# torchvision's Caffe-style VGG statistics: inputs become 0-255 BGR-mean-centred values (in RGB order).
IMAGE_MEAN = [0.48235, 0.45882, 0.40784]
IMAGE_STD = [1.0 / 255.0, 1.0 / 255.0, 1.0 / 255.0]

# Default boxes per location of the paper's layouts (2 + 2 * number of aspect ratios per level).
SSD300_NUM_ANCHORS = (4, 6, 6, 6, 4, 4)
SSD512_NUM_ANCHORS = (4, 6, 6, 6, 6, 4, 4)


def _extra_block(
    in_channels: int, mid_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int
) -> nn.Sequential:
    """1x1 bottleneck then a spatial conv, each followed by ReLU (the paper's conv8_x ... conv12_x)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, mid_channels, kernel_size=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(mid_channels, out_channels, kernel_size=kernel_size, stride=stride, padding=padding),
        nn.ReLU(inplace=True),
    )


def ssd300_extra_blocks() -> nn.ModuleList:
    """conv8_2 ... conv11_2 of SSD300: 19 -> 10 -> 5 -> 3 -> 1 at a 300x300 input."""
    return nn.ModuleList(
        [
            _extra_block(1024, 256, 512, kernel_size=3, stride=2, padding=1),  # conv8_2
            _extra_block(512, 128, 256, kernel_size=3, stride=2, padding=1),  # conv9_2
            _extra_block(256, 128, 256, kernel_size=3, stride=1, padding=0),  # conv10_2
            _extra_block(256, 128, 256, kernel_size=3, stride=1, padding=0),  # conv11_2
        ]
    )


def ssd512_extra_blocks() -> nn.ModuleList:
    """conv8_2 ... conv12_2 of SSD512: 32 -> 16 -> 8 -> 4 -> 2 -> 1 at a 512x512 input.

    This is the paper's (Caffe) SSD512, whose 7 levels give 24,564 default boxes. torchvision's
    unreleased ``highres`` variant has the same parameters (so the same state-dict keys and shapes)
    but keeps SSD300's unpadded stride-1 conv10_2/conv11_2, which gives 8 -> 6 -> 4 -> 1 instead.
    """
    return nn.ModuleList(
        [
            _extra_block(1024, 256, 512, kernel_size=3, stride=2, padding=1),  # conv8_2
            _extra_block(512, 128, 256, kernel_size=3, stride=2, padding=1),  # conv9_2
            _extra_block(256, 128, 256, kernel_size=3, stride=2, padding=1),  # conv10_2
            _extra_block(256, 128, 256, kernel_size=3, stride=2, padding=1),  # conv11_2
            _extra_block(256, 128, 256, kernel_size=4, stride=1, padding=1),  # conv12_2
        ]
    )


def _fc6_fc7() -> nn.Sequential:
    """pool5 (3x3, stride 1) and fc6/fc7 as convs; fc6 uses dilation 6 to keep fc6's receptive field."""
    fc = nn.Sequential(
        nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=False),  # pool5
        nn.Conv2d(512, 1024, kernel_size=3, padding=6, dilation=6),  # fc6
        nn.ReLU(inplace=True),
        nn.Conv2d(1024, 1024, kernel_size=1),  # fc7
        nn.ReLU(inplace=True),
    )
    xavier_init(fc)
    return fc


class SSDFeatureExtractorVGG(nn.Module):
    """VGG16 conv layers + fc6/fc7 + extra blocks, returning one feature map per prediction level.

    Args:
        vgg_features: ``torchvision.models.vgg16().features`` (31 modules, 5 max-pools).
        extra_blocks: the blocks after fc7 (their first takes fc7's 1024 channels).

    Attributes (state-dict names as in torchvision):
        features: conv1_1 ... relu4_3, the first prediction level.
        scale_weight: ``(512,)`` per-channel scale of the L2-normalised conv4_3, initialised to 20.
        extra: ``extra[0]`` = pool4 ... relu5_3 + pool5/fc6/fc7, then ``extra_blocks``.
        out_channels: channels of each returned level.
    """

    def __init__(self, vgg_features: nn.Sequential, extra_blocks: nn.ModuleList) -> None:
        super().__init__()
        pools = [i for i, layer in enumerate(vgg_features) if isinstance(layer, nn.MaxPool2d)]
        if len(pools) != 5:
            raise ValueError(f"expected VGG features with 5 max-pools, got {len(pools)}")
        _, _, pool3, pool4, _ = pools
        # ceil_mode on pool3 makes 75 -> 38 at a 300 input (the paper's 38x38 conv4_3).
        pool = vgg_features[pool3]
        assert isinstance(pool, nn.MaxPool2d)  # `pools` holds only MaxPool2d positions
        pool.ceil_mode = True

        self.scale_weight = nn.Parameter(torch.ones(512) * 20)
        self.features = nn.Sequential(*vgg_features[:pool4])  # up to relu4_3
        stem = nn.Sequential(*vgg_features[pool4:-1], _fc6_fc7())  # pool4 ... relu5_3 (no pool5), fc6, fc7
        self.extra = nn.ModuleList([stem, *extra_blocks])
        self.out_channels = [512, 1024] + [last_conv(block).out_channels for block in extra_blocks]

    def forward(self, x: Tensor) -> list[Tensor]:
        """``(N, 3, H, W)`` normalised images -> ``[(N, C_l, H_l, W_l)]``, finest level first."""
        x = self.features(x)
        # conv4_3's activations are ~10x larger than later layers'; normalise each location's
        # channel vector to unit length, then let the network learn the scale (ParseNet).
        outputs = [self.scale_weight.view(1, -1, 1, 1) * F.normalize(x)]
        for block in self.extra:
            x = block(x)
            outputs.append(x)
        return outputs


def vgg16_extractor(highres: bool = False) -> SSDFeatureExtractorVGG:
    """Randomly initialised SSD VGG16 backbone (SSD512's when ``highres``), torchvision's init order.

    VGG convs get torchvision's Kaiming init; extras and fc6/fc7 get Xavier. No pretrained
    weights: load a checkpoint into the full model instead.
    """
    features = vgg16(weights=None).features
    extras = ssd512_extra_blocks() if highres else ssd300_extra_blocks()
    xavier_init(extras)
    return SSDFeatureExtractorVGG(features, extras)


def _ssd_vgg16(num_classes: int, num_anchors: list[int], highres: bool) -> SSD:
    backbone = vgg16_extractor(highres)
    if len(num_anchors) != len(backbone.out_channels):
        raise ValueError(f"{len(backbone.out_channels)} feature levels but {len(num_anchors)} anchor counts")
    head = SSDHead(backbone.out_channels, num_anchors, num_classes)
    return SSD(backbone, head, IMAGE_MEAN, IMAGE_STD)


def ssd300_vgg16(num_classes: int, num_anchors: list[int] | None = None) -> SSD:
    """SSD300 with a VGG16 backbone: 6 levels, 38/19/10/5/3/1 at 300x300 (8,732 default boxes).

    Args:
        num_classes: classes including background.
        num_anchors: default boxes per location per level; the paper's ``[4, 6, 6, 6, 4, 4]`` when None.
    """
    return _ssd_vgg16(num_classes, list(num_anchors or SSD300_NUM_ANCHORS), highres=False)


def ssd512_vgg16(num_classes: int, num_anchors: list[int] | None = None) -> SSD:
    """SSD512 with a VGG16 backbone: 7 levels, 64/32/16/8/4/2/1 at 512x512 (24,564 default boxes).

    Args:
        num_classes: classes including background.
        num_anchors: default boxes per location per level; the paper's ``[4, 6, 6, 6, 6, 4, 4]`` when None.
    """
    return _ssd_vgg16(num_classes, list(num_anchors or SSD512_NUM_ANCHORS), highres=True)
