"""Where a report's files go: an output folder checked before anything is read, and names that stay in it.

Figure names are built from router, strategy and parameter names read from
results files, which anyone can write. A name taken from them must never
reach outside ``--out`` (``../x``, ``/abs``), hide (``.x``), be one the
filesystem refuses (NUL, over 255 bytes), or put two methods in one file.
Every destination is checked before the first file is written, so a refused
report leaves ``--out`` as it was.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path

from gemlab.report.results import ReportError

_PLAIN = re.compile(r"[A-Za-z0-9_+=:-][A-Za-z0-9._+=:-]{0,79}")  # kept as is: no separator, no leading dot
_UNSAFE = re.compile(r"[^A-Za-z0-9._+=:-]")


def safe_name(text: str) -> str:
    """``text`` itself when it is a plain file name, else a plain name that keeps distinct texts distinct.

    The replacement keeps the safe characters (others become ``_``, leading
    dots go, at most 60 of them) and appends a digest of the original text,
    so ``a/b`` and ``a_b`` do not meet in one file. Raises nothing.
    """
    if _PLAIN.fullmatch(text):
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return f"{_UNSAFE.sub('_', text).lstrip('.')[:60]}-{digest}"


def check_output_folder(out: Path) -> None:
    """Before anything is read: ``out`` must be a folder, or creatable, and writable.

    Nothing is created here; a temporary probe file is made and removed at
    once. Raises ReportError naming ``out`` (OSError when a folder on the way cannot be searched).
    """
    if out.exists() and not out.is_dir():
        raise ReportError(f"{out}: exists and is not a folder")
    nearest = next(p for p in (out, *out.parents) if p.exists())
    if not nearest.is_dir():
        raise ReportError(f"{out}: {nearest} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=nearest):
            pass
    except OSError as error:
        raise ReportError(f"{out}: cannot write in {nearest} ({error.strerror or error})") from None


def destinations(out: Path, names: Iterable[str]) -> dict[str, Path]:
    """Each file name as its path in ``out``.

    Raises ReportError for a name given twice (two figures in one file) or a
    path that resolves outside ``out`` (a name with a separator, or a
    symbolic link left in ``out`` that points elsewhere).
    """
    folder = out.resolve()
    paths: dict[str, Path] = {}
    for name in names:
        path = out / name
        if name in paths:
            raise ReportError(f"{path}: two figures would be written to this file")
        if path.resolve().parent != folder:
            raise ReportError(f"{path}: resolves outside the output folder {out}")
        paths[name] = path
    return paths
