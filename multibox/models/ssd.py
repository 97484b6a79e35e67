"""The SSD meta-architecture: normalise, extract multi-scale features, predict per default box.

The module is deliberately backbone-agnostic: anything that maps an image batch to a list of
feature maps can be the ``backbone``, and anything that maps that list to per-box outputs can be
the ``head``. Default boxes, box decoding, losses and NMS live elsewhere (``multibox.boxes``,
``multibox.losses``), so this forward pass is a pure tensor function that exports to ONNX as-is.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class SSD(nn.Module):
    """Single Shot MultiBox Detector (Liu et al., 2016) without post-processing.

    Args:
        backbone: maps a normalised ``(N, 3, H, W)`` batch to a list of feature maps
            ``[(N, C_l, H_l, W_l)]``, one per prediction level, finest first.
        head: maps that list to ``(box_regression (N, A, 4), cls_logits (N, A, C))``.
        image_mean, image_std: per-channel RGB statistics the backbone was designed for; the
            model subtracts/divides them itself so callers (and exported graphs) feed raw
            ``[0, 1]`` images and cannot get the normalisation wrong.

    The attribute names ``backbone`` and ``head`` are part of the contract: they make the state
    dict keys equal torchvision's SSD models', so torchvision checkpoints load with ``strict=True``.
    """

    image_mean: Tensor
    image_std: Tensor

    def __init__(self, backbone: nn.Module, head: nn.Module, image_mean: list[float], image_std: list[float]) -> None:
        super().__init__()
        if len(image_mean) != 3 or len(image_std) != 3:
            raise ValueError(f"image_mean and image_std need 3 values (RGB), got {image_mean} and {image_std}")
        self.backbone = backbone
        self.head = head
        # Non-persistent: they follow .to(device) but stay out of the state dict (torchvision parity).
        mean = torch.tensor(image_mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(image_std, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("image_mean", mean, persistent=False)
        self.register_buffer("image_std", std, persistent=False)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Raw per-default-box predictions.

        Args:
            images: ``(N, 3, H, W)`` float RGB in ``[0, 1]``.

        Returns:
            ``box_regression`` ``(N, A, 4)`` in the ``(dx, dy, dw, dh)`` encoding and ``cls_logits``
            ``(N, A, C)`` (C includes background at index 0), where ``A = sum_l H_l * W_l * B_l``
            ordered level-major, then location (row-major y, x), then box — torchvision's order,
            which is also the order of ``multibox.boxes.anchors.default_boxes``.
        """
        x = (images - self.image_mean) / self.image_std
        features = self.backbone(x)
        return self.head(list(features))


def chain_outputs(stages: list[nn.Module], x: Tensor) -> list[Tensor]:
    """Run stages one after another and keep every stage's output: a feature pyramid, finest first."""
    outputs = []
    for stage in stages:
        x = stage(x)
        outputs.append(x)
    return outputs
