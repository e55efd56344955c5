"""Errors raised for bad data, and the record of what lenient reading skipped."""

from __future__ import annotations


class DataError(ValueError):
    """A dataset file or record is wrong; the message names the file and the record."""
