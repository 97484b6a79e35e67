"""Prediction heads: one small conv per feature level, for class scores and box offsets.

Each level's conv predicts ``B_l * K`` channels (``B_l`` default boxes per location, ``K`` values
per box); the outputs are rearranged to ``(N, H_l * W_l * B_l, K)`` and concatenated over levels.
Module names and nesting (``classification_head.module_list[i]``,
``regression_head.module_list[i]``) copy torchvision's so state dicts are interchangeable.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torchvision.ops.misc import Conv2dNormActivation


def xavier_init(module: nn.Module) -> None:
    """Xavier-uniform conv weights, zero biases: torchvision's (and the paper's) SSD init."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.constant_(layer.bias, 0.0)


def last_conv(block: nn.Module) -> nn.Conv2d:
    """The last convolution of a block: its out_channels is what the block hands to a head."""
    return [m for m in block.modules() if isinstance(m, nn.Conv2d)][-1]


def normal_init(module: nn.Module) -> None:
    """N(0, 0.03) conv weights, zero biases: torchvision's SSDLite init (used when training from scratch)."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.normal_(layer.weight, mean=0.0, std=0.03)
            if layer.bias is not None:
                nn.init.constant_(layer.bias, 0.0)


class ScoringHead(nn.Module):
    """Runs ``module_list[l]`` on level ``l`` and flattens the results into one box axis.

    Args:
        module_list: one module per level mapping ``(N, C_l, H_l, W_l)`` to
            ``(N, B_l * num_columns, H_l, W_l)``, channels ordered box-major (box b's values at
            ``b * num_columns ... (b + 1) * num_columns - 1``).
        num_columns: values per box (number of classes, or 4 for box offsets).
    """

    def __init__(self, module_list: nn.ModuleList, num_columns: int) -> None:
        super().__init__()
        self.module_list = module_list
        self.num_columns = num_columns

    def forward(self, features: list[Tensor]) -> Tensor:
        """``[(N, C_l, H_l, W_l)]`` -> ``(N, sum_l H_l * W_l * B_l, num_columns)``, level-major, then y, x, box."""
        if len(features) != len(self.module_list):
            raise ValueError(f"expected {len(self.module_list)} feature maps, got {len(features)}")
        results = []
        for module, x in zip(self.module_list, features, strict=True):
            out = module(x)
            n, _, h, w = out.shape
            # (N, B*K, H, W) -> (N, B, K, H, W) -> (N, H, W, B, K) -> (N, H*W*B, K)
            out = out.view(n, -1, self.num_columns, h, w).permute(0, 3, 4, 1, 2)
            results.append(out.reshape(n, -1, self.num_columns))
        return torch.cat(results, dim=1)


class _PairHead(nn.Module):
    """A regression and a classification :class:`ScoringHead` sharing the same input features."""

    def __init__(
        self, classification_head: ScoringHead, regression_head: ScoringHead, num_classes: int, num_anchors: list[int]
    ) -> None:
        super().__init__()
        self.classification_head = classification_head
        self.regression_head = regression_head
        # Plain attributes (not in the state dict) so callers can size default boxes without a dry run.
        self.num_classes = num_classes
        self.num_anchors = list(num_anchors)

    def forward(self, features: list[Tensor]) -> tuple[Tensor, Tensor]:
        """``[(N, C_l, H_l, W_l)]`` -> ``(box_regression (N, A, 4), cls_logits (N, A, num_classes))``."""
        return self.regression_head(features), self.classification_head(features)


class SSDHead(_PairHead):
    """The original SSD head: a plain 3x3 conv per level for each output.

    Args:
        in_channels: channels of each feature level.
        num_anchors: default boxes per location of each level.
        num_classes: classes including background.
    """

    def __init__(self, in_channels: list[int], num_anchors: list[int], num_classes: int) -> None:
        if len(in_channels) != len(num_anchors):
            raise ValueError(f"{len(in_channels)} feature levels but {len(num_anchors)} anchor counts")
        # Build-then-init order matches torchvision, so the same seed gives the same weights.
        cls_convs = nn.ModuleList(
            nn.Conv2d(c, num_classes * a, kernel_size=3, padding=1)
            for c, a in zip(in_channels, num_anchors, strict=True)
        )
        xavier_init(cls_convs)
        reg_convs = nn.ModuleList(
            nn.Conv2d(c, 4 * a, kernel_size=3, padding=1) for c, a in zip(in_channels, num_anchors, strict=True)
        )
        xavier_init(reg_convs)
        super().__init__(ScoringHead(cls_convs, num_classes), ScoringHead(reg_convs, 4), num_classes, num_anchors)


def _prediction_block(in_channels: int, out_channels: int, norm_layer: Callable[..., nn.Module]) -> nn.Sequential:
    """SSDLite predictor (MobileNetV2 paper, section 6.2): 3x3 depthwise + norm + ReLU6, then a 1x1 conv."""
    return nn.Sequential(
        Conv2dNormActivation(
            in_channels,
            in_channels,
            kernel_size=3,
            groups=in_channels,
            norm_layer=norm_layer,
            activation_layer=nn.ReLU6,
        ),
        nn.Conv2d(in_channels, out_channels, 1),
    )


class SSDLiteHead(_PairHead):
    """SSDLite head: depthwise-separable convs instead of full 3x3 convs (about 1/9 of the cost).

    Args:
        in_channels: channels of each feature level.
        num_anchors: default boxes per location of each level.
        num_classes: classes including background.
        norm_layer: normalisation after each depthwise conv (torchvision: BatchNorm2d eps=0.001, momentum=0.03).
    """

    def __init__(
        self, in_channels: list[int], num_anchors: list[int], num_classes: int, norm_layer: Callable[..., nn.Module]
    ) -> None:
        if len(in_channels) != len(num_anchors):
            raise ValueError(f"{len(in_channels)} feature levels but {len(num_anchors)} anchor counts")
        cls_blocks = nn.ModuleList(
            _prediction_block(c, num_classes * a, norm_layer) for c, a in zip(in_channels, num_anchors, strict=True)
        )
        normal_init(cls_blocks)
        reg_blocks = nn.ModuleList(
            _prediction_block(c, 4 * a, norm_layer) for c, a in zip(in_channels, num_anchors, strict=True)
        )
        normal_init(reg_blocks)
        super().__init__(ScoringHead(cls_blocks, num_classes), ScoringHead(reg_blocks, 4), num_classes, num_anchors)
