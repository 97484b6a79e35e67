"""Where each backbone's tensors come from in a torchvision ImageNet classification file.

A mapping takes our backbone and one of its state-dict keys and returns the key in the torchvision
classification state dict, or None for tensors the classifier does not have (SSD extras, fc6/fc7, conv4_3's
L2 scale), which keep their initialisation. Each model's entry in ``multibox.models.factory.MODELS`` names
its family; ``multibox.models.weights`` loads the file.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn


def _count_children(module: nn.Module, path: str) -> int:
    """Length of the Sequential/ModuleList at dotted `path` in `module` (its number of children)."""
    return len(list(module.get_submodule(path).children()))


def _vgg16_source_key(backbone: nn.Module, key: str) -> str | None:
    """VGG16 (torchvision's ``_vgg_extractor`` split): ``features.0 ... 22`` (conv1_1 ... relu4_3)
    are ours as they are; ``features.23 ... 29`` (pool4 ... relu5_3) are ``extra.0.0 ... 6``,
    whose next module (``extra.0.7``, pool5/fc6/fc7 as convs) is not in the classifier."""
    n = _count_children(backbone, "features")
    stem = _count_children(backbone, "extra.0") - 1  # pool4 ... relu5_3, then the fc6/fc7 block
    if re.fullmatch(r"features\.\d+\..+", key):
        return key
    if match := re.fullmatch(r"extra\.0\.(\d+)\.(.+)", key):
        j, rest = int(match[1]), match[2]
        return f"features.{n + j}.{rest}" if j < stem else None
    return None


def _split_mobilenet_source_key(inner: str) -> Callable[[nn.Module, str], str | None]:
    """MobileNetV2/V3 split inside block ``s`` (the last stride-2 block), as torchvision's
    ``SSDLiteFeatureExtractorMobileNet`` does: ``features.0`` = blocks ``0 ... s-1`` plus block
    ``s``'s expansion conv (``<inner>.0``), ``features.1.0`` = the rest of block ``s`` (``<inner>.1 ...``,
    same indices),
    ``features.1.j`` = block ``s + j``. ``inner`` is the block's sequence (V3: ``block``, V2: ``conv``)."""

    def source_key(backbone: nn.Module, key: str) -> str | None:
        s = _count_children(backbone, "features.0") - 1  # index of the split block in the classifier's features
        if match := re.fullmatch(r"features\.0\.(\d+)\.(.+)", key):
            i, rest = int(match[1]), match[2]
            return f"features.{i}.{rest}" if i < s else f"features.{s}.{inner}.0.{rest}"
        if match := re.fullmatch(r"features\.1\.0\.(\d+)\.(.+)", key):  # a slice keeps the block's own indices
            return f"features.{s}.{inner}.{match[1]}.{match[2]}"
        if match := re.fullmatch(r"features\.1\.(\d+)\.(.+)", key):
            j, rest = int(match[1]), match[2]
            return f"features.{s + j}.{rest}"
        return None  # extra blocks

    return source_key


# multibox.models.resnet.resnet50_features: Sequential(conv1, bn1, relu, maxpool, layer1, layer2, layer3).
_RESNET_FEATURES = {0: "conv1", 1: "bn1", 4: "layer1", 5: "layer2", 6: "layer3"}


def _resnet50_source_key(backbone: nn.Module, key: str) -> str | None:
    """ResNet-50 up to ``layer3``: ``features.0/1/4/5/6`` are ``conv1``/``bn1``/``layer1..3``
    (``layer4`` and ``fc`` are not used; layer3's strides change but its shapes do not)."""
    if match := re.fullmatch(r"features\.(\d+)\.(.+)", key):
        name = _RESNET_FEATURES.get(int(match[1]))
        return f"{name}.{match[2]}" if name is not None else None
    return None


def _resnet50_fpn_source_key(backbone: nn.Module, key: str) -> str | None:
    """ResNet-50 FPN: ``body.*`` (conv1 ... layer4 via IntermediateLayerGetter) is the classifier's
    keys with a ``body.`` prefix; the pyramid (lateral, output, extra) is not in the classifier."""
    return key[len("body.") :] if key.startswith("body.") else None


_RESNET_LAYERS = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")


def _custom_source_key(layer_name: Callable[[int], str]) -> Callable[[nn.Module, str], str | None]:
    """model.name=custom: ``stages.k.j`` is layer ``offset_k + j`` of the classifier's layer list
    (``features`` of MobileNets/VGG, conv1 ... layer4 of ResNet), where ``offset_k`` is the length
    of the stages before; the extra blocks are not in the classifier."""

    def source_key(backbone: nn.Module, key: str) -> str | None:
        if match := re.fullmatch(r"stages\.(\d+)\.(\d+)\.(.+)", key):
            k, j, rest = int(match[1]), int(match[2]), match[3]
            return f"{layer_name(sum(_count_children(backbone, f'stages.{i}') for i in range(k)) + j)}.{rest}"
        return None

    return source_key


def _weights_enum(enum: str, member: str) -> Callable[[], Any]:
    def get() -> Any:
        import torchvision.models as models

        return getattr(getattr(models, enum), member)

    return get


@dataclass(frozen=True)
class BackboneFamily:
    """How a model's backbone takes a torchvision classification state dict.

    Attributes:
        title: the classification network, for messages.
        imagenet: returns torchvision's weights enum member whose file ``imagenet`` means.
        source_key: ``(backbone, our key) -> the file's key`` or None when not from the classifier.
    """

    title: str
    imagenet: Callable[[], Any]
    source_key: Callable[[nn.Module, str], str | None]


VGG16_CAFFE = BackboneFamily(
    # The Caffe-converted features (torchvision's default for ssd300_vgg16): they expect the
    # 0-255 mean-subtracted input that multibox.models.vgg normalises to.
    "VGG16",
    _weights_enum("VGG16_Weights", "IMAGENET1K_FEATURES"),
    _vgg16_source_key,
)
SSDLITE_MOBILENET_V3_LARGE = BackboneFamily(
    "MobileNetV3-Large",
    _weights_enum("MobileNet_V3_Large_Weights", "IMAGENET1K_V1"),
    _split_mobilenet_source_key("block"),
)
SSDLITE_MOBILENET_V2 = BackboneFamily(
    "MobileNetV2",
    _weights_enum("MobileNet_V2_Weights", "IMAGENET1K_V1"),
    _split_mobilenet_source_key("conv"),
)
RESNET50 = BackboneFamily("ResNet-50", _weights_enum("ResNet50_Weights", "IMAGENET1K_V1"), _resnet50_source_key)
RESNET50_FPN = BackboneFamily("ResNet-50", _weights_enum("ResNet50_Weights", "IMAGENET1K_V1"), _resnet50_fpn_source_key)
# model.name=custom, by model.backbone. Its inputs get ImageNet mean/std normalisation, so its
# VGG16 takes torchvision's standard ImageNet weights rather than the Caffe-style features.
CUSTOM: dict[str, BackboneFamily] = {
    "mobilenet_v2": BackboneFamily(
        "MobileNetV2",
        _weights_enum("MobileNet_V2_Weights", "IMAGENET1K_V1"),
        _custom_source_key(lambda i: f"features.{i}"),
    ),
    "mobilenet_v3_large": BackboneFamily(
        "MobileNetV3-Large",
        _weights_enum("MobileNet_V3_Large_Weights", "IMAGENET1K_V1"),
        _custom_source_key(lambda i: f"features.{i}"),
    ),
    "resnet50": BackboneFamily(
        "ResNet-50", _weights_enum("ResNet50_Weights", "IMAGENET1K_V1"), _custom_source_key(lambda i: _RESNET_LAYERS[i])
    ),
    "vgg16": BackboneFamily(
        "VGG16", _weights_enum("VGG16_Weights", "IMAGENET1K_V1"), _custom_source_key(lambda i: f"features.{i}")
    ),
}
