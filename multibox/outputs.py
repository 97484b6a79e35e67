"""Output folders: created and proven writable before any work that would write into them.

A read-only or mistyped output path should fail in the first second with the folder named,
not after hours of training with an OSError traceback.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from multibox.errors import MultiboxError


def writable_dir(folder: Path | str, what: str = "outputs") -> Path:
    """Create `folder` (and its parents) and write a scratch file in it; MultiboxError naming it otherwise."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise MultiboxError(f"{folder}: is a file, not a folder for the {what}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise MultiboxError(f"{folder}: cannot write the {what} there ({os_reason(error)})") from None
    return folder


def os_reason(error: OSError) -> str:
    """'permission denied', 'not a directory', ...: the OS's words without errno or path."""
    return (error.strerror or type(error).__name__).lower()
