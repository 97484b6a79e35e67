"""A pytest plugin that reports each test's CPU seconds (this process's threads plus finished child processes).

Wall time (`--durations`) swings with whatever else loads a shared machine; CPU time much less so. Setup and
teardown count with the test that ran them, so a session fixture's cost lands on its first user, as in
`--durations`. Use: `python -m pytest -p benchmarks.pytest_cputime --cputime=40 [--cputime-json FILE]`.
Under pytest-xdist (`-n 2`) each worker writes FILE.gw0, FILE.gw1: test -> [CPU s, start, end] (wall clock), which
shows how the workers' modules interleave and where one waits.
"""

from __future__ import annotations

import json
import os
import resource
import time
from collections.abc import Generator
from pathlib import Path

import pytest

_SECONDS: dict[str, float] = {}
_SPANS: dict[str, tuple[float, float]] = {}  # wall-clock start and end of each test, to see how workers interleave


def _cpu_now() -> float:
    """This process's CPU time (all threads) plus that of its children that have been waited for."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("cputime")
    group.addoption("--cputime", type=int, default=0, metavar="N", help="show the N tests that used most CPU time")
    group.addoption("--cputime-json", default=None, metavar="FILE", help="write every test's CPU seconds to FILE")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, None, None]:
    start, wall = _cpu_now(), time.time()
    yield
    _SECONDS[item.nodeid] = _cpu_now() - start
    _SPANS[item.nodeid] = (wall, time.time())


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Under pytest-xdist each worker measures its own tests: it writes FILE.<worker> (CPU s, start, end)."""
    worker, target = os.environ.get("PYTEST_XDIST_WORKER"), session.config.getoption("--cputime-json")
    if worker and target:
        rows = {node: (_SECONDS[node], *_SPANS[node]) for node in _SECONDS}
        Path(f"{target}.{worker}").write_text(json.dumps(rows, indent=1), encoding="utf-8")


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if config.getoption("--cputime-json"):
        Path(config.getoption("--cputime-json")).write_text(json.dumps(_SECONDS, indent=1), encoding="utf-8")
    count = config.getoption("--cputime")
    if not count:
        return
    terminalreporter.section(f"top {count} CPU times (process + children)")
    for nodeid, seconds in sorted(_SECONDS.items(), key=lambda kv: -kv[1])[:count]:
        terminalreporter.write_line(f"{seconds:8.2f}s  {nodeid}")
    terminalreporter.write_line(f"{sum(_SECONDS.values()):8.2f}s  total over {len(_SECONDS)} tests")
