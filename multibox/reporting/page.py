"""`report.md` and `report.html`: one page tying a run's numbers and pictures together.

The page is a short list of blocks (headings, paragraphs, tables, pictures) rendered twice:
Markdown for GitHub and editors, and a self-contained HTML page (a tiny hand-written
template, no dependencies) for any browser. Pictures are relative links, so the folder can
be moved or zipped as a whole.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from multibox.errors import MultiboxError
from multibox.metrics.coco import METRIC_DESCRIPTIONS, METRIC_KEYS


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Picture:
    path: str  # relative to the report
    caption: str


Block = str | Heading | Table | Picture  # a str is a paragraph

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 9px}"
    "td.n{text-align:right;font-variant-numeric:tabular-nums}img{max-width:100%}figure{margin:1em 0}"
)


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return cell == "n/a"
    return True


def render_markdown(title: str, blocks: Sequence[Block]) -> str:
    lines = [f"# {title}", ""]
    for block in blocks:
        if isinstance(block, Heading):
            lines += ["#" * block.level + " " + block.text, ""]
        elif isinstance(block, Table):
            escape = lambda cell: str(cell).replace("|", "\\|")  # noqa: E731
            lines.append("| " + " | ".join(map(escape, block.header)) + " |")
            lines.append(
                "|" + "|".join("---:" if _is_number(str(c)) else "---" for c in (block.rows or [block.header])[0]) + "|"
            )
            lines += ["| " + " | ".join(map(escape, row)) + " |" for row in block.rows]
            lines.append("")
        elif isinstance(block, Picture):
            lines += [f"![{block.caption}]({block.path})", "", f"*{block.caption}*", ""]
        else:
            lines += [block, ""]
    return "\n".join(lines)


def render_html(title: str, blocks: Sequence[Block]) -> str:
    e = html.escape
    parts = [
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{e(title)}</title>"
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{e(title)}</h1>",
    ]
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"<h{block.level}>{e(block.text)}</h{block.level}>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{e(str(c))}</th>" for c in block.header)
            body = "".join(
                "<tr>"
                + "".join(
                    f"<td class='n'>{e(str(c))}</td>" if _is_number(str(c)) else f"<td>{e(str(c))}</td>" for c in row
                )
                + "</tr>"
                for row in block.rows
            )
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif isinstance(block, Picture):
            parts.append(
                f"<figure><a href='{e(block.path)}'><img src='{e(block.path)}' alt='{e(block.caption)}'></a>"
                f"<figcaption>{e(block.caption)}</figcaption></figure>"
            )
        else:
            parts.append(f"<p>{e(block)}</p>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_report_page(folder: Path, title: str, blocks: Sequence[Block]) -> Path:
    """Write ``report.md`` and ``report.html`` into `folder`; returns the Markdown path."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "report.md").write_text(render_markdown(title, blocks), encoding="utf-8")
        (folder / "report.html").write_text(render_html(title, blocks), encoding="utf-8")
    except OSError as error:
        raise MultiboxError(f"{folder}: cannot write report: {error.strerror or error}") from None
    return folder / "report.md"


def _value(value: float | None) -> str:
    """Four decimals; COCO's -1 (nothing to measure) and missing values read n/a."""
    return "n/a" if value is None or value < 0 else f"{value:.4f}"


def _ratio(numerator: int, denominator: int) -> str:
    return f"{numerator / denominator:.4f}" if denominator else "n/a"


def per_class_rows(
    metrics: dict[str, Any], curves: dict[str, Any], matrix: np.ndarray, class_names: Sequence[str]
) -> list[list[str]]:
    """Per class: AP at [.5:.95], .5 and .75, then boxes, precision and recall at the report's score threshold."""
    at_50, at_75 = (
        curves["iou"].get("0.50", {}).get("per_class", {}),
        curves["iou"].get("0.75", {}).get("per_class", {}),
    )
    rows = []
    for k, name in enumerate(class_names):
        hits = int(matrix[k, k])
        rows.append(
            [
                name,
                _value(metrics.get("per_class", {}).get(name)),
                _value(at_50.get(name, {}).get("ap")),
                _value(at_75.get(name, {}).get("ap")),
                str(int(matrix[k].sum())),
                str(int(matrix[:, k].sum())),
                _ratio(hits, int(matrix[:, k].sum())),
                _ratio(hits, int(matrix[k].sum())),
            ]
        )
    return rows


def evaluation_blocks(
    metrics: dict[str, Any],
    curves: dict[str, Any],
    matrix: np.ndarray,
    class_names: Sequence[str],
    gallery: Sequence[dict[str, Any]],
    score_threshold: float,
    training_curves: str | None = None,
    summary: str = "",
) -> list[Block]:
    """The report's content: metrics, per-class table, curves, confusion matrix, worst images."""
    blocks: list[Block] = [summary] if summary else []
    blocks += [
        Heading("COCO metrics"),
        Table(
            ["metric", "description", "value"],
            [[k, METRIC_DESCRIPTIONS[k], _value(metrics[k])] for k in METRIC_KEYS if k in metrics],
        ),
    ]
    if "train_seconds" in metrics:
        blocks.append(f"Training took {metrics['train_seconds']} s.")
    blocks += [
        Heading("Per class"),
        f"AP columns are COCO's (100 detections per image, all areas). Boxes, detections, precision and recall "
        f"count detections with score >= {score_threshold:g} matched at IoU >= 0.5, as in the confusion matrix.",
        Table(
            ["class", "AP@[.5:.95]", "AP@.5", "AP@.75", "gt boxes", "detections", "precision", "recall"],
            per_class_rows(metrics, curves, matrix, class_names),
        ),
    ]
    if training_curves:
        blocks += [
            Heading("Training"),
            Picture(training_curves, "loss terms, learning rate and validation mAP per epoch"),
        ]
    blocks += [
        Heading("Precision-recall curves"),
        Picture(
            "pr_curves.png",
            "COCO's interpolated precision at 101 recall points, IoU 0.5 and 0.75; "
            "the area under each curve is its AP (numbers in pr_curves.json)",
        ),
        Heading("Confusion matrix"),
        Picture(
            "confusion_matrix.png",
            f"rows: true class, columns: predicted class, score >= {score_threshold:g}, "
            "IoU >= 0.5; background row = false positives, background column = misses "
            "(counts in confusion_matrix.json)",
        ),
        Heading("Worst validation images"),
        "Most errors (misses + false positives + wrong classes) first, ties by the lowest IoU of the correct "
        "boxes; predictions on the left, ground truth on the right (ranking in gallery.json).",
    ]
    blocks += [
        Picture(
            entry["image"],
            f"#{entry['rank']} {Path(entry['file']).name}: {entry['missed']} missed, "
            f"{entry['false_positives']} false positives, {entry['wrong_class']} wrong class",
        )
        for entry in gallery
    ]
    return blocks
