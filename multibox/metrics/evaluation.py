"""What one evaluation produced, as every evaluation path returns it.

Validation after training, ``multibox eval`` of a checkpoint (whole frames or sliced) and of an exported model
all end in :func:`score`, and the report draws from the same :class:`Evaluation`: the metrics, the detections
they came from and the ground truth they scored. So the report's curves cannot disagree with ``metrics.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from multibox.errors import MultiboxError
from multibox.metrics.coco import DetectionAccumulator, evaluate_metrics


@dataclass
class Evaluation:
    """Metrics, the detections they came from (COCO results, dataset category ids) and the ground truth scored
    (COCO dict; images that could not be read are left out of it, as they are of the metrics)."""

    metrics: dict[str, Any]
    detections: list[dict[str, Any]]
    ground_truth: dict[str, Any]

    @property
    def image_ids(self) -> set[int]:
        return {int(image["id"]) for image in self.ground_truth["images"]}


def score(
    accumulator: DetectionAccumulator,
    ground_truth: dict[str, Any],
    class_names: Sequence[str],
    metric: str = "coco",
    skipped: int = 0,
) -> Evaluation:
    """The evaluation of what `accumulator` collected, against the images of `ground_truth` it saw.

    `metric` is eval.metric (voc07/voc add VOC's AP). `skipped` counts unreadable images, said in one line."""
    results = accumulator.results()
    scored = accumulator.evaluated_ground_truth(ground_truth)
    if skipped:
        print(f"evaluation: {skipped} unreadable image(s) left out of the metrics (see the warnings above)")
    if skipped and not scored["images"]:
        raise MultiboxError("evaluation: no image of the evaluation set could be read")
    return Evaluation(evaluate_metrics(scored, results, list(class_names), metric), results, scored)
