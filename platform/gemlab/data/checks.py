"""Checks every reader and writer shares: box validity, bad-record handling, file existence, paths that
stay inside their folder, YAML files, and destinations checked before long work."""

from __future__ import annotations

import errno
import math
import os
import reprlib
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from gemlab.data.errors import DataError
from gemlab.errors import GemlabError

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


def read_yaml_mapping(path: Path, error: type[GemlabError]) -> dict[Any, Any]:
    """The mapping at the top of a YAML file.

    Raises ``error`` with one line naming the file (and, for a syntax error,
    the line and column) when the file is not UTF-8, not YAML or not a
    mapping, and ``OSError`` when it cannot be read.
    """
    try:
        data = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as problem:
        raise error(f"{path}: not UTF-8 text (byte {problem.start})") from None
    except yaml.MarkedYAMLError as problem:
        mark = problem.problem_mark or problem.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise error(f"{path}: not valid YAML: {problem.problem or problem.context}{where}") from None
    except (yaml.YAMLError, ValueError) as problem:  # ValueError: a value such as the date 2024-13-01
        raise error(f"{path}: not valid YAML: {' '.join(str(problem).split())}") from None
    if not isinstance(data, dict):
        raise error(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def is_name(value: Any) -> bool:
    """A non-blank string: what a hand-written file must give for a name. Raises nothing."""
    return isinstance(value, str) and value.strip() != ""


def is_names(value: Any) -> bool:
    """A list of names (possibly empty). Raises nothing."""
    return isinstance(value, list) and all(map(is_name, value))


def is_number(value: Any) -> bool:
    """A finite int or float as YAML or JSON give them (``True`` is not a number here). Raises nothing."""
    return type(value) in (int, float) and math.isfinite(value)


def checked_field(
    mapping: Mapping,
    key: str,
    where: str,
    test: Callable[[Any], bool],
    wanted: str,
    prefix: str = "",
    error: type[GemlabError] = DataError,
) -> Any:
    """``mapping[key]`` if present and passing ``test``.

    For hand-written files (an index, a scenario): raises ``error`` as
    ``<where>: <prefix><key>: missing`` or ``... must be <wanted>, got <value>``,
    so the message names the file and the field.
    """
    if key not in mapping:
        raise error(f"{where}: {prefix}{key}: missing")
    value = mapping[key]
    if not test(value):
        raise error(f"{where}: {prefix}{key}: must be {wanted}, got {reprlib.repr(value)}")
    return value


def only_known_keys(
    mapping: Mapping, known: Sequence[str], where: str, field: str = "", error: type[GemlabError] = DataError
) -> None:
    """Raise ``error`` naming the unknown keys of ``mapping`` (the value of ``field``, or the top level).

    A misspelt optional key must not be ignored: the default it leaves in
    place is not what the file's author asked for.
    """
    unknown = sorted(str(key) for key in mapping if key not in known)
    if unknown:
        inside = f"{field}: " if field else ""
        raise error(f"{where}: {inside}unknown field(s) {unknown}; expected some of {list(known)}")


def _nearest_folder(path: Path) -> Path:
    """The deepest existing ancestor of ``path`` (the working folder for a bare name); may be a file."""
    return next(ancestor for ancestor in Path(os.path.abspath(path)).parents if os.path.lexists(ancestor))


def _check_can_create(destination: Path) -> None:
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
    _check_can_create(path)


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
    _check_can_create(out)
    return out
