"""SSD on ResNet-50, laid out as NVIDIA DeepLearningExamples' SSD300 (and MLCommons ABTF's SSD).

ResNet-50 (torchvision's v1.5: stride on the 3x3 conv) up to ``layer3``, with ``layer3``'s first
block made stride 1 so the first prediction level keeps 1024 channels at stride 8 rather than 16.
Five "extra" blocks follow (1x1 bottleneck + BN + ReLU, then 3x3 conv + BN + ReLU): three halve
the resolution, the last two are unpadded stride-1 convs that trim one cell off each border.
That gives 38/19/10/5/3/1 at 300x300 (8,732 default boxes), like SSD300-VGG16, and
270x480 ... 30x56 at 2160x3840 (788,144 boxes). Heads are the original SSD's full 3x3 convs.

Parameter counts equal NVIDIA's / MLCommons' module for module (14,059,236 with 10 scores per box).
The names differ (``backbone.features`` / ``backbone.extra`` / ``head`` instead of
``feature_extractor`` / ``additional_blocks`` / ``loc`` / ``conf``), and so does the heads' channel
order, so their checkpoints need a key and channel remapping to load.
"""

from __future__ import annotations

from torch import Tensor, nn
from torchvision.models import resnet50
from torchvision.models.resnet import ResNet

from multibox.models.heads import SSDHead, last_conv, xavier_init
from multibox.models.ssd import SSD

# ImageNet statistics: NVIDIA's SSD normalises with torchvision's ResNet mean and std.
IMAGE_MEAN = [0.485, 0.456, 0.406]
IMAGE_STD = [0.229, 0.224, 0.225]

# Default boxes per location: NVIDIA's SSD300 (ratios [2], [2, 3], [2, 3], [2, 3], [2], [2]).
SSD_RESNET50_NUM_ANCHORS = (4, 6, 6, 6, 4, 4)

# (bottleneck 1x1 channels, output channels, 3x3 stride, 3x3 padding) of the 5 extra blocks.
EXTRA_BLOCKS = (
    (256, 512, 2, 1),
    (256, 512, 2, 1),
    (128, 256, 2, 1),
    (128, 256, 1, 0),  # unpadded: H -> H - 2
    (128, 256, 1, 0),
)


def _extra_block(in_channels: int, mid_channels: int, out_channels: int, stride: int, padding: int) -> nn.Sequential:
    """1x1 conv + BN + ReLU, then 3x3 conv + BN + ReLU; convs without bias (BN has the shift)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, mid_channels, kernel_size=1, bias=False),
        nn.BatchNorm2d(mid_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(mid_channels, out_channels, kernel_size=3, stride=stride, padding=padding, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def resnet50_extra_blocks(in_channels: int = 1024) -> nn.ModuleList:
    """NVIDIA's ``additional_blocks``: 1024 -> 512 -> 512 -> 256 -> 256 -> 256 channels, Xavier-initialised."""
    blocks = nn.ModuleList()
    for mid, out, stride, padding in EXTRA_BLOCKS:
        blocks.append(_extra_block(in_channels, mid, out, stride, padding))
        in_channels = out
    xavier_init(blocks)
    return blocks


def resnet50_features(resnet: ResNet) -> nn.Sequential:
    """conv1 ... layer3 of a torchvision ResNet, with layer3 kept at stride 8 (1024 channels for ResNet-50).

    Modifies ``resnet``'s first ``layer3`` block in place: its strided 3x3 conv and its downsample
    shortcut become stride 1. The weights' shapes do not change, so ImageNet weights still load.
    """
    first = resnet.layer3[0]
    first.conv1.stride = (1, 1)  # already 1 in torchvision's v1.5; NVIDIA sets it too
    first.conv2.stride = (1, 1)
    first.downsample[0].stride = (1, 1)
    return nn.Sequential(
        resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool, resnet.layer1, resnet.layer2, resnet.layer3
    )


class SSDFeatureExtractorResNet(nn.Module):
    """ResNet up to a stride-8 ``layer3`` plus extra blocks, returning one feature map per prediction level.

    Args:
        features: the truncated ResNet (:func:`resnet50_features`), the first prediction level.
        extra_blocks: blocks applied one after another to ``features``' output, one level each.

    Attributes:
        features, extra: as given (state-dict prefixes ``features.`` and ``extra.``).
        out_channels: channels of each returned level.
    """

    def __init__(self, features: nn.Sequential, extra_blocks: nn.ModuleList) -> None:
        super().__init__()
        self.features = features
        self.extra = extra_blocks
        first_channels = last_conv(features).out_channels  # the last bottleneck's expansion conv (conv3)
        self.out_channels = [first_channels] + [last_conv(block).out_channels for block in extra_blocks]

    def forward(self, x: Tensor) -> list[Tensor]:
        """``(N, 3, H, W)`` normalised images -> ``[(N, C_l, H_l, W_l)]``, finest level first."""
        x = self.features(x)
        outputs = [x]
        for block in self.extra:
            x = block(x)
            outputs.append(x)
        return outputs


def resnet50_extractor() -> SSDFeatureExtractorResNet:
    """Randomly initialised SSD ResNet-50 backbone: torchvision's ResNet init, Xavier extras.

    No pretrained weights: load an ImageNet ResNet-50 state dict into ``features`` (it matches
    ``conv1 ... layer3``'s keys after renaming) or a detection checkpoint into the full model.
    """
    return SSDFeatureExtractorResNet(resnet50_features(resnet50(weights=None)), resnet50_extra_blocks())


def ssd_resnet50(num_classes: int, num_anchors: list[int] | None = None) -> SSD:
    """SSD with a ResNet-50 backbone: 6 levels, 38/19/10/5/3/1 at 300x300 (8,732 default boxes).

    Args:
        num_classes: classes including background.
        num_anchors: default boxes per location per level; NVIDIA's ``[4, 6, 6, 6, 4, 4]`` when None.

    The two unpadded last blocks need the fourth level (stride 64) to be at least 5x5, so both
    input sides must be at least 257 pixels.
    """
    backbone = resnet50_extractor()
    num_anchors = list(num_anchors or SSD_RESNET50_NUM_ANCHORS)
    if len(num_anchors) != len(backbone.out_channels):
        raise ValueError(f"{len(backbone.out_channels)} feature levels but {len(num_anchors)} anchor counts")
    head = SSDHead(backbone.out_channels, num_anchors, num_classes)
    return SSD(backbone, head, IMAGE_MEAN, IMAGE_STD)
