"""The error raised for bad data (lenient reading is in ``checks.BadRecords``)."""

from __future__ import annotations

from gemlab.errors import GemlabError


class DataError(GemlabError, ValueError):
    """A dataset file or record is wrong; the message names the file and the record."""
