"""Output folders: created and proven writable before any work that would write into them.

A read-only or mistyped output path should fail in the first second with the folder named,
not after hours of training with an OSError traceback.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

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


def atomic_write(path: Path | str, write: Callable[[BinaryIO], object]) -> None:
    """Write `path` all or nothing: `write` fills a same-folder temporary file, which is fsynced and
    renamed over `path` (os.replace), and the folder is synced so the rename survives a power cut.
    A kill at any moment leaves either the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if os.name == "posix":  # mkstemp makes 0600: give the mode any new file of the user gets (0644 under umask 022)
            os.fchmod(handle, 0o666 & ~current_umask())
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask (POSIX has no call that only reads it: set it and put it back, under a lock)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _fsync_folder(folder: Path) -> None:
    """Make a rename durable: the folder entry is only on disk once the folder is synced (POSIX)."""
    if os.name != "posix":
        return
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)
