"""SSD detectors: the backbone-agnostic :class:`SSD` module and factories for the supported models."""

from multibox.models.factory import MODEL_NAMES, AnchorDefaults, anchor_defaults, build_model, feature_map_sizes
from multibox.models.ssd import SSD

__all__ = ["MODEL_NAMES", "SSD", "AnchorDefaults", "anchor_defaults", "build_model", "feature_map_sizes"]
