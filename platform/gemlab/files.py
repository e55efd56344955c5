"""Writing files so that nothing half-written is ever left behind."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temp path beside ``path``: renamed over it on success, removed on any error.

    Readers see the old file or the complete new one, never a part. The temp
    file is created with mode 0666 minus the umask (``mkstemp`` would make
    every saved file private to its owner).
    """
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    os.close(os.open(temp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        yield temp
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def write_text_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through :func:`atomic_path`, creating the folder if needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temp:
        temp.write_text(text, encoding="utf-8")


@contextmanager
def staged_folder(path: Path) -> Iterator[Path]:
    """A hidden sibling folder to fill, renamed to ``path`` on success and removed on any error.

    For outputs made of many files (a generated dataset): readers never see a
    half-written folder. ``path`` must be absent or an empty folder.
    """
    staging = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    staging.mkdir(parents=True)
    try:
        yield staging
        if path.exists():
            path.rmdir()
        staging.rename(path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
