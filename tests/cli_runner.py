"""Run the `multibox` command line the way the tests need it: in this process by default, or as the console script.

Starting the console script costs 4-8 s on the 2-core CI machine before it does anything (importing torch,
torchvision and Lightning), and the journeys run it about a hundred times. In-process, :func:`multibox.cli.main`
(what the console script calls) runs with what a fresh process would have: its own working directory,
environment, one torch thread, Python's default warning filters (so a warning shown by an earlier run is shown
again) and its own stdout and stderr, all restored afterwards. Exceptions that escape ``main()`` are failures,
as a traceback would be.

Journeys that depend on being a separate process (signals, exit codes from the interpreter, what stderr holds
from start to end) pass ``console=True``, and so does any run that forks data-loader workers (``data.num_workers``
above 0, the default 2): forking a test process that already runs ONNX Runtime's, OpenVINO's or torch's thread
pools can leave a worker waiting forever on a lock copied in its locked state (seen once in CI: `eval` of an .onnx
file hung in its loader). In-process runs use ``data.num_workers=0``. ``MULTIBOX_TEST_CONSOLE=1`` (set by
``make test-all``) sends every run through the console script.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import torch

FORCE_CONSOLE = os.environ.get("MULTIBOX_TEST_CONSOLE", "") not in ("", "0")


def console_script() -> list[str]:
    """The installed script beside this Python (`make test` does not put .venv/bin on PATH)."""
    script = Path(sys.executable).parent / "multibox"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "multibox"]


def run_cli(
    *args: str | Path,
    cwd: Path,
    env: dict[str, str] | None = None,
    console: bool = False,
    timeout: float = 600,
) -> subprocess.CompletedProcess:
    """`multibox ARGS` from ``cwd`` with ``env`` added to the environment; the finished "process"."""
    argv = [str(arg) for arg in args]
    if console or FORCE_CONSOLE:
        full = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore::DeprecationWarning", **(env or {})}
        return subprocess.run(
            [*console_script(), *argv], cwd=cwd, env=full, capture_output=True, text=True, timeout=timeout
        )
    return _in_process(argv, cwd, env or {})


def _in_process(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    from multibox.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved_env, saved_cwd, threads = dict(os.environ), os.getcwd(), torch.get_num_threads()
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    os.environ.update({"OMP_NUM_THREADS": "1", **env})
    torch.set_num_threads(1)
    os.chdir(cwd)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            warnings.resetwarnings()  # a fresh interpreter's filters; changing them also forgets what was shown
            warnings.simplefilter("default")
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            try:
                code = main(argv)
            except SystemExit as stop:  # argparse's usage errors
                code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    finally:
        os.chdir(saved_cwd)
        torch.set_num_threads(threads)
        os.environ.clear()
        os.environ.update(saved_env)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return subprocess.CompletedProcess(["multibox", *argv], code, out.getvalue(), err.getvalue())
