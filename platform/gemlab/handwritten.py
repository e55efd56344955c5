"""Reading files that people write by hand -- a data index, a planner scenario, a runtime env.

Such a file is read whole and checked field by field before anything acts on
it, and every complaint is one line that names the file and the field: a
misspelt key is refused rather than ignored (the default it leaves in place is
not what the author asked for), and a value of the wrong type is shown as
given. The caller passes its own error class, so ``gemlab data`` raises a
``DataError`` and ``gemlab plan`` a ``PlanInputError`` from the same checks.
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from gemlab.errors import GemlabError


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
        got = "an empty file" if data is None else type(data).__name__
        raise error(f"{path}: expected a mapping at the top level, got {got}")
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
    error: type[GemlabError],
    prefix: str = "",
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
    mapping: Mapping, known: Sequence[str], where: str, error: type[GemlabError], field: str = ""
) -> None:
    """Raise ``error`` naming the unknown keys of ``mapping`` (the value of ``field``, or the top level).

    A misspelt optional key must not be ignored: the default it leaves in
    place is not what the file's author asked for.
    """
    unknown = sorted(str(key) for key in mapping if key not in known)
    if unknown:
        inside = f"{field}: " if field else ""
        raise error(f"{where}: {inside}unknown field(s) {unknown}; expected some of {list(known)}")
