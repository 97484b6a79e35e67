"""Detection metrics: COCO (faster-coco-eval, ``coco``) and Pascal VOC AP (``voc``). They read only detections and
ground truth, so everything above (reporting, the training loop, evaluation commands) can use them."""
