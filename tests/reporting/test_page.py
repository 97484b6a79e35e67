"""report.md / report.html: rendering, and the whole evaluation report checked against its own numbers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.image import imread

from multibox.cli import main
from multibox.config import load_config
from multibox.data.formats.coco import load_coco
from multibox.data.records import DetectionSet
from multibox.data.synth import make_synthetic_dataset
from multibox.engine.evaluate import check_report_dir, default_report_dir
from multibox.errors import MultiboxError
from multibox.metrics.coco import METRIC_KEYS, coco_evaluate
from multibox.metrics.evaluation import Evaluation
from multibox.reporting.page import Heading, Picture, Table, render_html, render_markdown
from multibox.reporting.report import write_evaluation_report


def test_render_markdown_and_html_escape_and_align() -> None:
    blocks = [
        Heading("Scores"),
        "a < b",
        Table(["name", "AP"], [["cat|dog", "0.5000"], ["fox", "n/a"]]),
        Picture("x y.png", "the <plot>"),
    ]
    markdown = render_markdown("Report", blocks)
    assert markdown.splitlines()[:4] == ["# Report", "", "## Scores", ""]
    assert "| name | AP |\n|---|---:|\n| cat\\|dog | 0.5000 |\n| fox | n/a |" in markdown
    assert "![the <plot>](x y.png)" in markdown
    page = render_html("Report", blocks)
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<p>a &lt; b</p>" in page and "<td>cat|dog</td><td class='n'>0.5000</td>" in page
    assert "<img src='x y.png' alt='the &lt;plot&gt;'>" in page


@pytest.fixture(scope="module")
def val_set(tmp_path_factory: pytest.TempPathFactory) -> DetectionSet:
    root = make_synthetic_dataset(tmp_path_factory.mktemp("report") / "val", 6, (64, 64), seed=3)
    return load_coco(root / "images", root / "annotations.json")


def perfect_detections(gt: dict) -> list[dict]:
    return [
        {
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "bbox": list(a["bbox"]),
            "score": 0.9 - 0.01 * a["id"],
        }
        for a in gt["annotations"]
    ]


def table_rows(markdown: str, first_header: str) -> dict[str, list[str]]:
    """The rows of the Markdown table whose header starts with `first_header`, by their first cell."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        rows[cells[0]] = cells
    return rows


def test_evaluation_report_matches_its_numbers(val_set: DetectionSet, tmp_path: Path) -> None:
    gt = val_set.to_coco_gt()
    detections = perfect_detections(gt)
    missed, confused = gt["annotations"][0], gt["annotations"][-1]
    assert missed["image_id"] != confused["image_id"]
    detections = [d for d in detections if d["score"] != 0.9 - 0.01 * missed["id"]]  # one miss ...
    detections.append(
        {"image_id": missed["image_id"], "category_id": gt["categories"][0]["id"], "bbox": [0, 0, 9, 9], "score": 0.8}
    )  # ... a false alarm
    wrong = next(c["id"] for c in gt["categories"] if c["id"] != confused["category_id"])
    detections[-2] = {**detections[-2], "category_id": wrong}  # and one box with the wrong class
    metrics = coco_evaluate(gt, detections, val_set.class_names)

    evaluation = Evaluation(metrics, detections, gt)
    report = write_evaluation_report(tmp_path, evaluation, val_set, score_threshold=0.5, gallery_size=4)
    assert report == tmp_path / "report.md"
    markdown = report.read_text()
    for key, cells in table_rows(markdown, "metric").items():
        assert cells[2] == ("n/a" if metrics[key] < 0 else f"{metrics[key]:.4f}"), key
    assert list(table_rows(markdown, "metric")) == [k for k in METRIC_KEYS]

    curves = json.loads((tmp_path / "pr_curves.json").read_text())
    assert curves["iou"]["0.50"]["ap"] == pytest.approx(metrics["map_50"], abs=1e-9)
    assert curves["iou"]["0.75"]["ap"] == pytest.approx(metrics["map_75"], abs=1e-9)
    assert np.mean(curves["iou"]["0.50"]["precision"]) == pytest.approx(metrics["map_50"], abs=1e-9)
    per_class = table_rows(markdown, "class")
    assert list(per_class) == val_set.class_names
    for name, cells in per_class.items():
        if name in metrics["per_class"]:
            assert cells[1] == f"{metrics['per_class'][name]:.4f}"
            assert cells[2] == f"{curves['iou']['0.50']['per_class'][name]['ap']:.4f}"

    confusion = json.loads((tmp_path / "confusion_matrix.json").read_text())
    counts = np.array(confusion["counts"])
    k = len(val_set.class_names)
    assert confusion["classes"] == [*val_set.class_names, "background"] and confusion["score_threshold"] == 0.5
    assert counts.trace() == len(gt["annotations"]) - 2  # all but the miss and the wrong class
    assert counts[:k, k].sum() == 1 and counts[k, :k].sum() == 1 and counts[:k, :k].sum() - counts.trace() == 1
    assert sum(int(c[4]) for c in per_class.values()) == len(gt["annotations"])  # gt boxes column

    gallery = json.loads((tmp_path / "gallery.json").read_text())
    assert [(g["image_id"], g["errors"]) for g in gallery[:2]] == [(missed["image_id"], 2), (confused["image_id"], 1)]
    assert len(gallery) == 4 and all(g["errors"] == 0 for g in gallery[2:])
    html = (tmp_path / "report.html").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert set(links) == {"pr_curves.png", "confusion_matrix.png", *(g["image"] for g in gallery)}
    for link in links:
        assert (tmp_path / link).is_file() and f"src='{link}'" in html
        assert float(np.std(imread(tmp_path / link))) > 0


def test_report_links_training_curves_and_checks_threshold(val_set: DetectionSet, tmp_path: Path) -> None:
    log = tmp_path / "metrics.csv"
    log.write_text("epoch,step,train/loss,lr\n0,1,2.0,0.1\n0,2,1.5,0.1\n")
    detections = perfect_detections(val_set.to_coco_gt())
    metrics = coco_evaluate(val_set.to_coco_gt(), detections, val_set.class_names)
    evaluation = Evaluation(metrics, detections, val_set.to_coco_gt())
    markdown = write_evaluation_report(tmp_path / "out", evaluation, val_set, training_log=log).read_text()
    assert "](results.png)" in markdown and (tmp_path / "out" / "results.png").is_file()
    assert "map | AP @[IoU=0.50:0.95 \\| area=all \\| maxDets=100] | 1.0000 |" in markdown
    with pytest.raises(MultiboxError, match="report score threshold 2: must be between 0 and 1"):
        write_evaluation_report(tmp_path / "bad", evaluation, val_set, score_threshold=2.0)


def tiny_checkpoint(run: Path, data: Path) -> Path:
    """A random-weight checkpoint of a tiny SSDLite, in a run folder as training leaves it."""
    from multibox.engine.module import DetectionModule

    paths = [
        f"data.{split}.{key}={data / ('images' if key == 'images' else 'annotations.json')}"
        for split in ("train", "val")
        for key in ("images", "annotations")
    ]
    config = load_config(
        None,
        [
            *paths,
            "model.name=ssdlite320_mobilenet_v3_large",
            "model.width_mult=0.25",
            "data.input_size=[64,64]",
            "data.num_workers=0",
            "train.progress=false",
            "train.accelerator=cpu",
            "eval.max_detections=20",
        ],
    )
    dataset = load_coco(data / "images", data / "annotations.json")
    module = DetectionModule(config.to_dict(), dataset.class_names, dataset.category_ids)
    (run / "checkpoints").mkdir(parents=True)
    path = run / "checkpoints" / "best.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    (run / "metrics.csv").write_text("epoch,step,train/loss,val/map\n0,3,2.0,\n0,3,,0.1\n")
    return path


def test_eval_plots_cli(
    val_set: DetectionSet, tmp_path: Path, capsys: pytest.CaptureFixture[str], one_thread: None
) -> None:
    weights = tiny_checkpoint(tmp_path / "run", val_set.records[0].file.parent.parent)
    assert main(["eval", "--weights", str(weights), "--plots", "--plot-conf", "0.05"]) == 0
    out = tmp_path / "run" / "eval"
    assert f"report: {out / 'report.md'}" in capsys.readouterr().out
    for name in (
        "report.md",
        "report.html",
        "metrics.json",
        "results.png",
        "pr_curves.png",
        "confusion_matrix.png",
        "gallery.json",
    ):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert json.loads((out / "pr_curves.json").read_text())["iou"]["0.50"]["ap"] == pytest.approx(
        metrics["map_50"], abs=1e-9
    )
    assert json.loads((out / "confusion_matrix.json").read_text())["score_threshold"] == 0.05
    assert len(list((out / "gallery").glob("*.jpg"))) == 6

    assert default_report_dir(weights) == tmp_path / "run" / "eval-2"  # the next --plots keeps this report
    assert main(["eval", "--weights", str(weights), "--plots", str(out)]) == 2
    assert f"{out}: already holds a report" in capsys.readouterr().err
    assert main(["eval", "--weights", str(weights), "--plots", "--plot-conf", "1.5"]) == 2
    assert "report score threshold 1.5: must be between 0 and 1" in capsys.readouterr().err


def test_default_and_explicit_report_dirs(tmp_path: Path) -> None:
    run_weights = tmp_path / "run" / "checkpoints" / "best.ckpt"
    assert default_report_dir(run_weights) == tmp_path / "run" / "eval"
    (tmp_path / "run" / "eval").mkdir(parents=True)
    assert default_report_dir(run_weights) == tmp_path / "run" / "eval"  # an empty folder holds no report
    (tmp_path / "run" / "eval" / "report.md").write_text("old")
    (tmp_path / "run" / "eval-2").mkdir()
    (tmp_path / "run" / "eval-2" / "report.md").write_text("old")
    assert default_report_dir(run_weights) == tmp_path / "run" / "eval-3"
    assert default_report_dir(tmp_path / "model.ckpt") == tmp_path / "model_eval"
    assert check_report_dir(tmp_path / "new") == tmp_path / "new"
    with pytest.raises(MultiboxError, match="eval: already holds a report; delete it or pass another --plots folder"):
        check_report_dir(tmp_path / "run" / "eval")
    with pytest.raises(MultiboxError, match="model.ckpt: is a file, not a folder"):
        (tmp_path / "model.ckpt").write_text("x")
        check_report_dir(tmp_path / "model.ckpt")


def test_training_writes_the_report(tiny_run: Path) -> None:
    """The shared tiny run (tests/conftest.py): `multibox train` with a val set ends with the report."""
    run = tiny_run / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    for name in ("report.md", "report.html", "results.png", "pr_curves.png", "confusion_matrix.png", "gallery.json"):
        assert (run / name).is_file(), name
    assert json.loads((run / "pr_curves.json").read_text())["iou"]["0.75"]["ap"] == pytest.approx(
        metrics["map_75"], abs=1e-9
    )
    assert "](results.png)" in (run / "report.md").read_text()
