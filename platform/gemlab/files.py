"""Writing files so that nothing half-written is ever left behind."""

from __future__ import annotations

import errno
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


def _nearest_folder(path: Path) -> Path:
    """The deepest existing ancestor of ``path`` (the working folder for a bare name); may be a file."""
    return next(ancestor for ancestor in Path(os.path.abspath(path)).parents if os.path.lexists(ancestor))


def check_can_create(destination: Path) -> None:
    """Raise OSError naming ``destination`` unless its deepest existing ancestor is a folder we can write in.

    Tried by creating and removing a hidden file there: permission bits do
    not tell (root ignores them; read-only mounts and /proc refuse anyway).
    """
    folder = _nearest_folder(destination)
    if not folder.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"{folder} is not a folder", str(destination))
    probe = folder / f".{destination.name}.{uuid.uuid4().hex}.tmp"
    try:
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except OSError as error:
        raise OSError(error.errno, f"cannot write in {folder} ({error.strerror})", str(destination)) from None
    probe.unlink()


def check_file_destination(path: Path) -> None:
    """Raise ``OSError`` naming ``path`` unless a file can be written there; creates nothing.

    Commands call it before their long work (a solve, a read of every
    annotation), so a bad ``--out`` fails in a second rather than after the
    work. A missing folder is fine when it can be created: the writers create
    it. ``path`` may be an existing file, which is replaced.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a folder; give a file name", str(path))
    check_can_create(path)
