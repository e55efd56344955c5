"""The error raised for bad data (lenient reading is in ``checks.BadRecords``)."""

from __future__ import annotations


class DataError(ValueError):
    """A dataset file or record is wrong; the message names the file and the record."""
