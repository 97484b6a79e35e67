"""Every format, the way a user walks it: train 1 epoch -> eval -> predict on a folder -> export to ONNX.

Each format trains a different model of the zoo (the three that need >= 268 px inputs are in test_zoo.py), and
evaluates at a non-square input size that is neither its training size nor its default. Options stand before
and after the KEY=VALUE overrides: an override is never taken as an option's value (issue 13, item 4).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from faster_coco_eval import COCO

MODELS = {  # format -> the model section it trains
    "coco": {"name": "ssdlite320_mobilenet_v3_large", "width_mult": 0.25},
    "voc": {"name": "ssdlite_mobilenet_v2", "width_mult": 0.25},
    "yolo": {"name": "ssd_mobilenet_v1", "width_mult": 0.25},
    "txt": {"name": "custom", "width_mult": 0.25, "strides": [8, 16, 32]},
    "openimages": {"name": "ssd_resnet50_fpn", "width_mult": 1.0},  # no width multiplier outside MobileNets
    "cognata": {"name": "ssdlite320_mobilenet_v3_large", "width_mult": 0.25},
}
FORMATS = ("coco", "voc", "yolo", "txt", "openimages", "cognata")  # = journey.formats
ANCHORS = {"txt": {"anchors": {"box_sizes": [[12, 20], [28, 40], [56]]}}}  # the custom model has no default layout
CONSOLE = {"coco"}  # formats trained by the installed console script; everything else runs main() in-process
EVAL_SIZE = "[48,80]"  # H, W: non-square, not the training size 64x64, not any model's default


@pytest.fixture(scope="session")
def format_run(journey_root, journey):
    """fmt -> (config, run folder): the dataset written and trained once per session, from journey_root/work."""
    runs: dict[str, tuple[Path, Path]] = {}

    def run(fmt: str) -> tuple[Path, Path]:
        if fmt not in runs:
            config = journey.write_config(
                journey_root,
                journey.write_dataset(journey_root, fmt),
                name=fmt,
                model=MODELS[fmt],
                train={"report": True},  # the journeys' configs leave it out; here the report is checked
                **ANCHORS.get(fmt, {}),
            )
            work = journey_root / "work"
            journey.ok(
                "train",
                "train.output_dir=runs/" + fmt,
                "-c",
                f"../cfg/{fmt}.yaml",
                "train.seed=1",
                cwd=work,
            )
            runs[fmt] = config, work / "runs" / fmt
        return runs[fmt]

    return run


@pytest.mark.parametrize("fmt", FORMATS)
def test_train_eval_predict_export(fmt, format_run, journey_root, journey):
    config, run = format_run(fmt)
    work = journey_root / "work"
    best = run / "checkpoints" / "best.ckpt"
    assert best.is_file() and (run / "metrics.json").is_file()
    for written in (run / "gallery.json", run / "config.yaml"):  # paths normalised: no cfg/../coco
        assert "/../" not in written.read_text() and "/./" not in written.read_text(), written
    names = journey.dataset_class_names(config)
    trained = json.loads((run / "metrics.json").read_text())
    assert set(trained["per_class"]) <= set(names) and trained["per_class"], trained["per_class"]

    # --plots takes no value here: the override after it must stay an override.
    journey.ok(
        "eval",
        "data.num_workers=0",
        "--weights",
        best,
        "--plots",
        f"data.input_size={EVAL_SIZE}",
        "-c",
        f"../cfg/{fmt}.yaml",
        "--out",
        f"{fmt}-eval.json",
        "eval.nms_threshold=0.5",
        cwd=work,
    )
    evaluated = json.loads((work / f"{fmt}-eval.json").read_text())
    assert list(evaluated["per_class"]) == list(trained["per_class"])
    assert (run / "eval" / "report.md").is_file() and not list(work.glob("data.input_size*"))

    images = {
        "coco": "coco/images/val",
        "voc": "voc/VOCdevkit/VOC2012/JPEGImages",
        "yolo": "yolo/images/val",
        "txt": "txt/images",
        "openimages": "openimages/validation",
        "cognata": "cognata/val",
    }[fmt]
    journey.ok(
        "predict",
        "--weights",
        best,
        "--source",
        f"../{images}",
        "--out",
        f"{fmt}-predictions",
        "--conf",
        "0.0",
        cwd=work,
    )
    predictions = json.loads((work / f"{fmt}-predictions" / "predictions.json").read_text())
    assert predictions, "a tiny untrained model still gives low-score boxes at --conf 0"
    files = sorted({p["file_name"] for p in predictions})
    ground_truth = COCO(
        {
            "images": [{"id": i + 1, "file_name": f, "width": 64, "height": 48} for i, f in enumerate(files)],
            "annotations": [],
            "categories": [{"id": c} for c in {p["category_id"] for p in predictions}],
        }
    )
    assert len(ground_truth.loadRes(predictions).getAnnIds()) == len(predictions)

    journey.ok("export", "--weights", best, "--format", "onnx", "--out", f"{fmt}.onnx", cwd=work)
    import onnxruntime

    session = onnxruntime.InferenceSession(str(work / f"{fmt}.onnx"), providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0]
    shape = [dim if isinstance(dim, int) else 1 for dim in feed.shape]
    dtype = np.uint8 if "uint8" in feed.type else np.float32
    outputs = session.run(None, {feed.name: np.zeros(shape, dtype)})
    assert outputs and all(np.isfinite(o.astype(np.float64)).all() for o in outputs)
