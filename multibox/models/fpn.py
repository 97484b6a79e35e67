"""SSD-ResNet50-FPN: MindSpore ModelZoo's RetinaNet-style SSD (ResNet-50, FPN P3-P7, shared heads).

ResNet-50's C3, C4, C5 (strides 8, 16, 32) go through a feature pyramid (Lin et al., 2017) of
256 channels; two more stride-2 levels follow, giving P3-P7 = 80, 40, 20, 10, 5 at 640x640.
One head, whose conv weights serve every level, predicts 6 boxes per location (2 octave scales x
3 aspect ratios, RetinaNet's anchors); it is meant to be trained with the sigmoid focal loss
(``loss.name: focal``), so its class bias starts at RetinaNet's prior.

Where MindSpore (``official/cv/ssd/src/fpn.py``, ``ssd.py``) and torchvision's RetinaNet differ,
this follows MindSpore:

* FPN: 1x1 lateral convs with bias; top-down pathway by **bilinear** resizing (torchvision:
  nearest); each merged map then gets a 3x3 conv + BatchNorm + ReLU6 (torchvision: a plain conv).
* P6 = 3x3 stride-2 conv + BN + ReLU6 on **P5** and P7 the same on P6 (torchvision's
  ``LastLevelP6P7`` takes C5 or P5 and puts a bare ReLU before P7's conv).
* Head (``WeightSharedMultiBox``): per task, 4 x (3x3 conv 256 + BN + ReLU6) then a 3x3 predictor
  conv. The convs (tower and predictor) are one set shared by all levels, but each level has its
  own BatchNorm: P3's and P7's activation statistics differ a lot, and one shared set of running
  statistics would mismatch every level at eval time (EfficientDet makes the same choice).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import resnet50
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.resnet import ResNet
from torchvision.ops.misc import Conv2dNormActivation

from multibox.models.heads import xavier_init
from multibox.models.ssd import SSD

# ImageNet statistics, as torchvision's ResNet-50 (and MindSpore's COCO pipeline) normalise.
IMAGE_MEAN = [0.485, 0.456, 0.406]
IMAGE_STD = [0.229, 0.224, 0.225]

FPN_CHANNELS = 256
# Default boxes per location: 2 octave scales x ratios [1, 2, 1/2] on each of the 5 levels.
FPN_NUM_ANCHORS = (6, 6, 6, 6, 6)
# RetinaNet's prior: every class starts at probability 0.01, so the ~50k background boxes do not
# swamp the first steps of the focal loss with a loss of log(2) each.
PRIOR_PROBABILITY = 0.01


def mindspore_norm_layer() -> Callable[..., nn.Module]:
    """BatchNorm as MindSpore's SSD builds it (eps=0.001, decay 0.97, i.e. PyTorch momentum 0.03)."""
    return partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)


def _conv_bn_relu6(in_channels: int, out_channels: int, stride: int, norm_layer: Callable[..., nn.Module]) -> nn.Module:
    """3x3 conv + norm + ReLU6 (MindSpore's ``conv_bn_relu``); padding 1 gives its 'same' sizes, ceil(H / stride)."""
    return Conv2dNormActivation(
        in_channels, out_channels, kernel_size=3, stride=stride, norm_layer=norm_layer, activation_layer=nn.ReLU6
    )


class ResNetFPNFeatureExtractor(nn.Module):
    """ResNet C3-C5 -> FPN P3-P5, plus P6 and P7 by stride-2 convs: 5 levels of ``out_channels``.

    Args:
        resnet: a torchvision ResNet (its ``fc`` and ``avgpool`` are dropped).
        out_channels: channels of every pyramid level.
        norm_layer: normalisation of the FPN output convs and of P6/P7.

    Attributes:
        body: the ResNet up to ``layer4`` (state-dict keys ``body.conv1.weight`` ... equal torchvision's
            ResNet's with a ``body.`` prefix, so ImageNet weights load with ``strict=False``).
        lateral: 1x1 convs C3, C4, C5 -> ``out_channels``.
        output: 3x3 conv + norm + ReLU6 on each merged top-down map (P3, P4, P5).
        extra: P5 -> P6 -> P7.
        out_channels: channels of each returned level.
    """

    def __init__(
        self, resnet: ResNet, out_channels: int = FPN_CHANNELS, norm_layer: Callable[..., nn.Module] | None = None
    ) -> None:
        super().__init__()
        norm_layer = norm_layer or mindspore_norm_layer()
        self.body = IntermediateLayerGetter(resnet, return_layers={"layer2": "c3", "layer3": "c4", "layer4": "c5"})
        in_channels = [layer[-1].conv3.out_channels for layer in (resnet.layer2, resnet.layer3, resnet.layer4)]
        self.lateral = nn.ModuleList(nn.Conv2d(c, out_channels, kernel_size=1) for c in in_channels)
        self.output = nn.ModuleList(_conv_bn_relu6(out_channels, out_channels, 1, norm_layer) for _ in in_channels)
        self.extra = nn.ModuleList(_conv_bn_relu6(out_channels, out_channels, 2, norm_layer) for _ in range(2))
        xavier_init(self.lateral)
        xavier_init(self.output)
        xavier_init(self.extra)
        self.out_channels = [out_channels] * (len(in_channels) + len(self.extra))

    def forward(self, x: Tensor) -> list[Tensor]:
        """``(N, 3, H, W)`` normalised images -> ``[P3, P4, P5, P6, P7]``, finest first."""
        c = list(self.body(x).values())
        laterals = [conv(feature) for conv, feature in zip(self.lateral, c, strict=True)]
        merged = [laterals[-1]]
        for lateral in reversed(laterals[:-1]):
            # Resize to the finer map's exact size (not x2): odd sizes on any input stay aligned.
            top_down = F.interpolate(merged[0], size=lateral.shape[-2:], mode="bilinear", align_corners=False)
            merged.insert(0, lateral + top_down)
        outputs = [conv(m) for conv, m in zip(self.output, merged, strict=True)]
        for block in self.extra:
            outputs.append(block(outputs[-1]))
        return outputs


class _SharedTower(nn.Module):
    """One task's branch of :class:`WeightSharedHead`: shared convs, per-level norms, shared predictor.

    Args:
        channels: input (and tower) channels, the same on every level.
        num_levels: feature levels served (one set of norms each).
        depth: tower convs before the predictor.
        out_channels: predictor channels (boxes per location x values per box).
        norm_layer: the per-level normalisation.
    """

    def __init__(
        self, channels: int, num_levels: int, depth: int, out_channels: int, norm_layer: Callable[..., nn.Module]
    ) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(channels, channels, kernel_size=3, padding=1) for _ in range(depth))
        self.norms = nn.ModuleList(nn.ModuleList(norm_layer(channels) for _ in range(depth)) for _ in range(num_levels))
        self.predictor = nn.Conv2d(channels, out_channels, kernel_size=3, padding=1)
        # RetinaNet's init: N(0, 0.01) weights, zero bias (the class predictor's bias is set by the caller).
        for conv in [*self.convs, self.predictor]:
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.constant_(conv.bias, 0.0)

    def forward(self, x: Tensor, level: int) -> Tensor:
        for conv, norm in zip(self.convs, cast(nn.ModuleList, self.norms[level]), strict=True):
            x = F.relu6(norm(conv(x)))
        return self.predictor(x)


class WeightSharedHead(nn.Module):
    """MindSpore's ``WeightSharedMultiBox``: one set of conv weights predicts boxes on every level.

    Outputs follow :class:`multibox.models.heads.ScoringHead`'s order (level-major, then row-major
    location, then box), so they line up with :func:`multibox.boxes.anchors.default_boxes`.

    Args:
        channels: channels of every feature level (they must all be equal to share weights).
        num_levels: feature levels.
        num_anchors: default boxes per location, the same on every level.
        num_classes: classes including background.
        depth: tower convs per task (MindSpore's ``num_addition_layers``: 4).
        norm_layer: per-level normalisation in the towers.
        prior_probability: initial sigmoid score of every class.
    """

    def __init__(
        self,
        channels: int,
        num_levels: int,
        num_anchors: int,
        num_classes: int,
        depth: int = 4,
        norm_layer: Callable[..., nn.Module] | None = None,
        prior_probability: float = PRIOR_PROBABILITY,
    ) -> None:
        super().__init__()
        norm_layer = norm_layer or mindspore_norm_layer()
        self.classification_tower = _SharedTower(channels, num_levels, depth, num_anchors * num_classes, norm_layer)
        self.regression_tower = _SharedTower(channels, num_levels, depth, num_anchors * 4, norm_layer)
        bias = self.classification_tower.predictor.bias
        assert bias is not None  # nn.Conv2d's default bias=True
        nn.init.constant_(bias, -math.log((1 - prior_probability) / prior_probability))
        # Plain attributes, as on the other heads: callers size default boxes without a dry run.
        self.num_classes = num_classes
        self.num_anchors = [num_anchors] * num_levels

    @staticmethod
    def _flatten(out: Tensor, num_columns: int) -> Tensor:
        """(N, B*K, H, W) -> (N, H*W*B, K): channels are box-major, as in ScoringHead."""
        n, _, h, w = out.shape
        return out.view(n, -1, num_columns, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, num_columns)

    def forward(self, features: list[Tensor]) -> tuple[Tensor, Tensor]:
        """``[(N, C, H_l, W_l)]`` -> ``(box_regression (N, A, 4), cls_logits (N, A, num_classes))``."""
        if len(features) != len(self.num_anchors):
            raise ValueError(f"expected {len(self.num_anchors)} feature maps, got {len(features)}")
        regression, logits = [], []
        for level, x in enumerate(features):
            regression.append(self._flatten(self.regression_tower(x, level), 4))
            logits.append(self._flatten(self.classification_tower(x, level), self.num_classes))
        return torch.cat(regression, dim=1), torch.cat(logits, dim=1)


def resnet50_fpn_extractor() -> ResNetFPNFeatureExtractor:
    """Randomly initialised ResNet-50 FPN backbone (torchvision's ResNet init, Xavier pyramid convs)."""
    return ResNetFPNFeatureExtractor(resnet50(weights=None))


def ssd_resnet50_fpn(num_classes: int, num_anchors: list[int] | None = None) -> SSD:
    """SSD-ResNet50-FPN: 5 levels of 256 channels, 80/40/20/10/5 at 640x640 (51,150 default boxes).

    Args:
        num_classes: classes including background (the focal loss ignores the background column).
        num_anchors: default boxes per location per level; all equal (the head is shared), 6 when None.
    """
    backbone = resnet50_fpn_extractor()
    num_anchors = list(num_anchors or FPN_NUM_ANCHORS)
    if len(num_anchors) != len(backbone.out_channels):
        raise ValueError(f"{len(backbone.out_channels)} feature levels but {len(num_anchors)} anchor counts")
    if len(set(num_anchors)) != 1:
        raise ValueError(f"the shared head needs the same number of boxes on every level, got {num_anchors}")
    head = WeightSharedHead(FPN_CHANNELS, len(num_anchors), num_anchors[0], num_classes)
    return SSD(backbone, head, IMAGE_MEAN, IMAGE_STD)
