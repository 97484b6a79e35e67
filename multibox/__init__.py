"""multibox: train, evaluate and deploy SSD object detectors."""

__version__ = "0.1.0"
