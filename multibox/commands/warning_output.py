"""How the CLI shows warnings: ``warning: FILE: problem``, once per message, and a count at the end of the run.

The library warns with :func:`warnings.warn` (messages start with the file or key at fault) and prints nothing;
the CLI installs :func:`install` in place of Python's default display, which shows the library's install path,
line number, category and source line (``.../dataset.py:154: UserWarning: ...``), none of which helps a user.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any, TextIO


class WarningPrinter:
    """Replacement for :func:`warnings.showwarning`: one line per distinct message, counted."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream
        self.seen: set[str] = set()
        self.repeats = 0

    def show(
        self,
        message: Any,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        """Print ``warning: <first line of the message>`` the first time that message comes."""
        text = " ".join(str(message).split()) or category.__name__
        if text in self.seen:
            self.repeats += 1
            return
        self.seen.add(text)
        print(f"warning: {text}", file=self.stream or sys.stderr, flush=True)

    def summary(self) -> str | None:
        """``3 warnings (see above)`` at the end of a run that warned, else None."""
        count = len(self.seen)
        if not count:
            return None
        repeated = f", {self.repeats} repeats not shown" if self.repeats else ""
        return f"{count} warning{'s' if count != 1 else ''} (see above{repeated})"


def install(stream: TextIO | None = None) -> WarningPrinter:
    """Route every warning of this process through a new :class:`WarningPrinter` and return it."""
    printer = WarningPrinter(stream)
    warnings.showwarning = printer.show
    return printer
