"""The problems ``multibox data validate`` found, as a table and a one-line summary per kind."""

from __future__ import annotations

from typing import Any

from multibox.data.validate import ValidationReport


def print_report(report: ValidationReport, max_rows: int = 50, console: Any = None) -> None:
    """A rich table of the problems (the first `max_rows`) and a one-line summary per kind."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    title = f"{report.annotation_file} ({report.images_dir})"
    if report.problems:
        table = Table(title=title, show_lines=False)
        for column in ("kind", "file / id", "detail"):
            table.add_column(column, overflow="fold")
        for problem in report.problems[:max_rows]:
            style = "red" if problem.severity == "error" else "yellow"
            table.add_row(f"[{style}]{problem.kind}[/]", problem.where, problem.detail)
        console.print(table)
        if len(report.problems) > max_rows:
            console.print(f"... and {len(report.problems) - max_rows} more problems (--max-rows to show more)")
    summary = (
        f"{report.num_images} images ({report.images_decoded} decoded), {report.num_annotations} annotations, "
        f"{report.num_categories} categories: "
    )
    if report.ok:
        console.print(
            summary + "[green]no problems[/]" if not report.problems else summary + f"{len(report.problems)} warnings"
        )
    else:
        kinds = ", ".join(f"{kind} {count}" for kind, count in report.counts().items())
        console.print(summary + f"[red]{len(report.errors)} errors[/] ({kinds})")
