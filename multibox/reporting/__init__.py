"""What people look at: boxes drawn on images, plots (curves, confusion matrix) and the evaluation report.

Below the engine and inference, so training, ``multibox eval`` and prediction draw and report the same way."""
