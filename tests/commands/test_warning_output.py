"""Warnings reach the user as ``warning: FILE: problem``, once each, with a count at the end (issue 13, item 8)."""

import io
import json
import subprocess
import sys
import warnings
from pathlib import Path

from multibox.commands.warning_output import install
from multibox.data.synth import make_synthetic_dataset

# The console script of the Python running the tests (make test does not put .venv/bin on PATH).
MULTIBOX = str(Path(sys.executable).parent / "multibox")


def test_each_message_once_then_a_count():
    stream = io.StringIO()
    previous = warnings.showwarning
    try:
        printer = install(stream)
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = printer.show
            for _ in range(3):
                warnings.warn("a.jpg: skipped, cannot decode", UserWarning, stacklevel=1)
            warnings.warn("b.jpg: skipped,\n   truncated", UserWarning, stacklevel=1)
    finally:
        warnings.showwarning = previous
    assert stream.getvalue() == "warning: a.jpg: skipped, cannot decode\nwarning: b.jpg: skipped, truncated\n"
    assert printer.summary() == "2 warnings (see above, 2 repeats not shown)"


def test_the_console_script_shows_no_python_warning_format(tmp_path):
    source = make_synthetic_dataset(tmp_path / "src", 2, (32, 32), seed=0, max_objects=2)
    coco = json.loads((source / "annotations.json").read_text())
    coco["annotations"][0]["iscrowd"] = 1
    (source / "annotations.json").write_text(json.dumps(coco))
    done = subprocess.run(
        [MULTIBOX, "data", "convert", "--from", "coco", "--to", "yolo", "src", "out"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert lines == [
        "warning: out: YOLO has no crowd/difficult flag: 1 crowd boxes left out",
        "1 warning (see above)",
    ], done.stderr
