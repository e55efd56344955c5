"""Checks every data reader and writer shares: box validity, bad-record handling, file existence, paths that
stay inside their folder, and the new folder a generator writes into."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from gemlab.data.errors import DataError
from gemlab.files import check_can_create

BOX_TOLERANCE = 1e-3  # pixels: rounding in the tools that wrote the boxes, not a real overflow


def box_problem(box: Sequence[float], width: int, height: int) -> str | None:
    """Why an (x, y, w, h) box cannot be used in a width × height image, or None if it can.

    The comparisons are written so that NaN fails them. Raises nothing.
    """
    x, y, w, h = box
    if not (w > 0 and h > 0):
        return "degenerate box (width and height must be > 0)"
    inside = x >= -BOX_TOLERANCE and y >= -BOX_TOLERANCE
    if not (inside and x + w <= width + BOX_TOLERANCE and y + h <= height + BOX_TOLERANCE):
        return f"box outside the {width}x{height} image"
    return None


class BadRecords:
    """Where readers send a bad record: raised at once, or under ``lenient`` skipped and listed."""

    def __init__(self, lenient: bool) -> None:
        self.lenient = lenient
        self.skipped: list[str] = []

    def report(self, file: Path, record: str, reason: str) -> None:
        """Raise DataError("file: record: reason"), or when lenient, list it in ``skipped``."""
        message = f"{file}: {record}: {reason}"
        if not self.lenient:
            raise DataError(message)
        self.skipped.append(message)


class ExistingFiles:
    """Answers "is this file on disk?" with one listing per folder instead of one stat per file.

    A split of 100k images would otherwise cost 100k stats, which is slow on
    network file systems. Raises nothing: an unreadable folder holds no files.
    """

    def __init__(self) -> None:
        self._names: dict[str, frozenset[str]] = {}

    def __contains__(self, path: Path) -> bool:
        folder, name = os.path.split(path)
        if folder not in self._names:
            try:
                with os.scandir(folder) as entries:
                    self._names[folder] = frozenset(entry.name for entry in entries if entry.is_file())
            except OSError:
                self._names[folder] = frozenset()
        return name in self._names[folder]


def path_inside(folder: Path, name: str) -> Path | None:
    """``folder/name`` normalised, or None when ``name`` leads out of ``folder`` (absolute, or ``..`` past it).

    An annotation file names images relative to its images folder; one that
    names ``../../home/x.png`` or ``/etc/x.png`` would make gemlab read files
    the dataset does not hold. ``folder`` must be absolute and normalised.
    Symbolic links inside ``folder`` are the dataset's own choice and are not
    resolved. Raises nothing.
    """
    path = os.path.normpath(os.path.join(folder, name))
    return Path(path) if os.path.commonpath([folder, path]) == str(folder) else None


def require_new_folder(out: Path) -> Path:
    """``out`` resolved, if it is absent or an empty folder that can be written; raises DataError otherwise.

    Generators refuse to mix their files into an existing dataset, and check
    that they can write before they generate anything. Raises DataError
    naming ``out`` when it is a file or a non-empty folder, and ``OSError``
    naming it when its folder cannot be written.
    """
    out = Path(out).resolve()
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder; choose a new folder")
    if out.exists() and any(out.iterdir()):
        raise DataError(f"{out}: exists and is not empty; choose a new folder")
    check_can_create(out)
    return out
