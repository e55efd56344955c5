"""The one base of every error gemlab raises on purpose, and how the ``gemlab`` command words it.

An expected failure -- a bad file, a refused config, an unreachable store --
must reach the user as one line, ``gemlab <command>: error: <path>: <what>``,
and exit 2; a bug should still show its traceback. Every module's error
class derives from :class:`GemlabError` (and from ``ValueError`` or
``RuntimeError``, so library callers can keep catching those), and
:func:`gemlab.cli.main` turns it, or an ``OSError``, into that line.
"""

from __future__ import annotations


class GemlabError(Exception):
    """A failure the user can fix; the message names the file, key or value."""


def user_message(error: BaseException) -> str:
    """One line for an expected failure: an ``OSError`` as ``<path>: <reason>``, anything else as its message."""
    if isinstance(error, OSError) and error.strerror:
        paths = [str(p) for p in (error.filename, error.filename2) if p is not None]
        return ": ".join([" -> ".join(paths), error.strerror] if paths else [error.strerror])
    lines = str(error).strip().splitlines()
    return (lines[0] if isinstance(error, OSError) else "\n".join(lines)) if lines else type(error).__name__
