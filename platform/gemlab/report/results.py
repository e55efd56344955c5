"""Reading results tables, and the DomainBed-style selection every table and figure starts from.

A *run* is one (method, candidate, seed): a method is the router (with its
planner strategy when that is not GEM's own), or the trial's named variant in
a sweep that has them (``Mixed-DINO``, ``GEMGR-DINO``: gemlab.tune.variants);
a candidate is one setting of the swept parameters. A seed's one-domain runs
of a method (Single-DINO) are read as one run
(:mod:`gemlab.report.per_domain_models`). Each run is read at its last evaluation, as DomainBed
reads the final checkpoint. Per method, the candidate with the best mean
``all``-domain task metric over its seeds is selected, and its seeds give the
mean ± std. The task metric is the one of
:data:`~gemlab.results_schema.TASK_METRICS` the results hold: accuracy for
classification runs, COCO AP for detection runs; one report takes one task.
Asked to (``gemlab report --select worst_group_accuracy``), the candidate is
selected by another metric of :data:`~gemlab.results_schema.SELECTION_METRICS`
instead (MoGE's models are selected by worst-group accuracy).
With a single evaluation split, selection and report share that split (an
optimistic, oracle-style selection); say so when you quote it.

Results files are checked column by column as they are read, so that a
damaged or foreign file ends in one line naming it and the column, never
deep inside a group-by.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.api.types import is_bool_dtype, is_numeric_dtype, is_string_dtype

from gemlab.errors import GemlabError
from gemlab.report.per_domain_models import combine_per_domain_models
from gemlab.results_schema import (
    ALL_DOMAINS,
    COLUMNS,
    CROSS_EXPERT,
    EXPERT_LOAD,
    EXPERT_METRIC,
    PARAM_PREFIX,
    RESULTS_FILE,
    SELECTION_METRICS,
    SWEPT_SEED,
    SWEPT_VARIANT,
    TASK_METRICS,
    Column,
)
from gemlab.storage import Location, StorageError

RUN_KEYS = ["method", "candidate", "seed"]
# What the reader checks: names before numbers; a swept seed's or variant's column only where a sweep wrote it.
TEXT_COLUMNS = [c for c in (*COLUMNS, SWEPT_VARIANT) if c.read and c.kind == "text"]
NUMBER_COLUMNS = [c for c in (*COLUMNS, SWEPT_SEED) if c.read and c.kind != "text"]
REQUIRED_COLUMNS = sorted(c.name for c in COLUMNS if c.read)


class ReportError(GemlabError, ValueError):
    """Unreadable, malformed or empty results, or a metric they lack; the message names the file."""


def _unreachable(where: Location, error: OSError) -> ReportError:
    """An OSError from the filesystem or object store, named by the (credential-masked) location."""
    lines = str(error).strip().splitlines()
    return ReportError(f"{where}: {error.strerror or (lines[0] if lines else type(error).__name__)}")


def results_files(paths: Iterable[str | Path]) -> list[Location]:
    """Each path (or storage URI) as given, or every ``results.parquet`` under a folder.

    Raises ReportError naming a path that is absent, a folder without results,
    or a location that cannot be parsed or reached.
    """
    files = []
    for given in paths:
        try:
            path = Location.parse(given)
        except StorageError as error:
            raise ReportError(str(error)) from None
        try:
            files += _files_at(path)
        except OSError as error:
            raise _unreachable(path, error) from None
    return files


def _files_at(path: Location) -> list[Location]:
    if path.is_dir():
        found = path.files_named(RESULTS_FILE)
        if not found:
            raise ReportError(f"{path}: no {RESULTS_FILE} under this folder")
        return found
    if path.is_file():
        return [path]
    raise ReportError(f"{path}: no such file or folder")


def _as_written(value: object) -> object:
    """A swept value as a sweep writes it: a list (a hand-written table's list column) as its text, so settings
    can be told apart and grouped; anything else as it is."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    return str(value) if isinstance(value, list) else value


def method_label(router: str, strategy: str | None) -> str:
    """The router, with its planner strategy when that is not GEM's own (``gem:random``); raises nothing."""
    return router if strategy in (None, "gem") or pd.isna(strategy) else f"{router}:{strategy}"


def _example(values: pd.Series) -> object:
    """The first value, as Python writes it in a message (``0.5``, not ``np.float64(0.5)``)."""
    return values.iloc[:1].tolist()[0]


def _missing_problem(values: pd.Series) -> str | None:
    return f"has a missing value (row {values.index[values.isna()][0]})" if values.isna().any() else None


def _text_problem(values: pd.Series, column: Column) -> str | None:
    """What is wrong with a column of names (runs, routers, domains, metrics), or None."""
    present = values.dropna()
    if not is_string_dtype(present):
        return f"holds {next(v for v in present if not isinstance(v, str))!r} where text belongs"
    return None if column.missing_allowed else _missing_problem(values)


def _number_problem(values: pd.Series, column: Column) -> str | None:
    """What is wrong with a column of numbers (values, steps, seeds), or None."""
    present = values.dropna()
    if len(present) and (is_bool_dtype(present) or not is_numeric_dtype(present)):
        return f"holds {_example(present)!r} where numbers belong"
    fractional = present[~np.isfinite(present.astype(float)) | (present % 1 != 0)] if column.whole else present[:0]
    if len(fractional):
        return f"holds {_example(fractional)!r} where a whole number belongs"
    return None if column.missing_allowed else _missing_problem(values)


def _check_table(file: Location, frame: pd.DataFrame) -> None:
    """Raise ReportError naming the file and column when a results table is not one gemlab reads."""
    missing = set(REQUIRED_COLUMNS) - set(frame.columns)
    if missing:
        raise ReportError(f"{file}: not a gemlab results table (missing columns {sorted(missing)})")
    problems = {c.name: _text_problem(frame[c.name], c) for c in TEXT_COLUMNS if c.name in frame}
    problems |= {c.name: _number_problem(frame[c.name], c) for c in NUMBER_COLUMNS if c.name in frame}
    for column, problem in problems.items():
        if problem:
            raise ReportError(f"{file}: column {column!r} {problem}")
    per_expert = frame["metric"][frame["metric"].str.startswith((f"{EXPERT_LOAD}/", f"{CROSS_EXPERT}/"))]
    malformed = per_expert[~per_expert.str.fullmatch(EXPERT_METRIC)]
    if len(malformed):
        raise ReportError(
            f"{file}: metric {_example(malformed)!r} has no expert number (expected like '{EXPERT_LOAD}/0')"
        )


def _read_table(file: Location) -> pd.DataFrame:
    try:
        data = file.read_bytes()
    except OSError as error:
        raise _unreachable(file, error) from None
    try:
        frame = pd.read_parquet(io.BytesIO(data))
    except Exception as error:  # pyarrow raises several types for a file that is not Parquet
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ReportError(f"{file}: not a readable results table ({reason})") from None
    _check_table(file, frame)
    return frame


def _named(files: Sequence[Location]) -> str:
    """The files for a message about all of them: the first few by name."""
    names = ", ".join(str(f) for f in files[:3])
    return names if len(files) <= 3 else f"{names} and {len(files) - 3} more"


def _metric_names(frame: pd.DataFrame) -> list[str]:
    """The metrics the results hold, per-expert families written once (``expert_load/<j>``)."""
    return sorted({EXPERT_METRIC.sub(lambda m: f"{m['family']}/<j>", m) for m in frame["metric"].unique()})


def _task_metrics_held(frame: pd.DataFrame) -> list[str]:
    """The task metrics (accuracy, ap) the results hold under ``all``, in TASK_METRICS' order."""
    held = set(frame["metric"][frame["domain"] == ALL_DOMAINS])
    return [metric for metric in TASK_METRICS.values() if metric in held]


def task_metric(frame: pd.DataFrame) -> str:
    """The metric runs are selected by: the one task metric (accuracy, ap) the results hold under ``all``.

    Raises ReportError when they hold none or several (:func:`load_results` refuses such results, naming
    their files).
    """
    held = _task_metrics_held(frame)
    if len(held) != 1:
        expected = " or ".join(TASK_METRICS.values())
        found = " and ".join(held) or "neither"
        raise ReportError(f"the results hold {found} under {ALL_DOMAINS!r}; a report takes one of {expected}")
    return held[0]


def _check_task(files: Sequence[Location], frames: Sequence[pd.DataFrame]) -> None:
    """Classification and detection runs are not compared in one report: refuse a mix, naming each task's files."""
    holding = {metric: [] for metric in TASK_METRICS.values()}
    for file, frame in zip(files, frames, strict=True):
        for metric in _task_metrics_held(frame):
            holding[metric].append(file)
    if sum(bool(held) for held in holding.values()) > 1:
        tasks = ", ".join(
            f"{_named(holding[metric])}: {task} runs ({metric})"
            for task, metric in TASK_METRICS.items()
            if holding[metric]
        )
        raise ReportError(f"{tasks}; one report takes one task, report each apart")


def _check_metrics(files: Sequence[Location], frame: pd.DataFrame, metric: str | None) -> None:
    """The task metric (to select by) and the reported one must each have a finite value somewhere."""
    if frame.empty:
        raise ReportError(f"{_named(files)}: the results hold no rows")
    held = ", ".join(map(repr, _metric_names(frame)))
    tasks = _task_metrics_held(frame)  # at most one, after _check_task
    if not tasks:
        wanted = " or ".join(TASK_METRICS.values())
        raise ReportError(
            f"{_named(files)}: no finite {ALL_DOMAINS!r}-domain {wanted} to select runs by (the results hold {held})"
        )
    finite = frame[np.isfinite(frame["value"])]
    if finite[(finite["domain"] == ALL_DOMAINS) & (finite["metric"] == tasks[0])].empty:
        raise ReportError(f"{_named(files)}: no finite {ALL_DOMAINS!r}-domain {tasks[0]} to select runs by")
    if metric is None:
        return
    if metric not in set(frame["metric"]):
        raise ReportError(f"{_named(files)}: no metric {metric!r} (--metric); the results hold {held}")
    if metric not in set(finite["metric"]):
        raise ReportError(f"{_named(files)}: every value of the metric {metric!r} is missing (NaN or infinite)")


def load_results(paths: Iterable[str | Path], metric: str | None = None) -> pd.DataFrame:
    """All rows of the given results files, with ``method`` and ``candidate`` columns added.

    Raises ReportError naming the file for a path that cannot be read, a file
    that is not a results table or has a column of the wrong kind, and naming
    the files when together they hold no rows, runs of two tasks
    (classification and detection), no finite task metric to select runs
    by, or no finite value of ``metric`` (listing the metrics they do hold;
    None: the task metric, checked already).
    """
    files = results_files(paths)
    frames = [_read_table(file) for file in files]
    _check_task(files, frames)
    frame = pd.concat(frames, ignore_index=True)
    _check_metrics(files, frame, metric)
    for column in (c for c in frame.columns if c.startswith(PARAM_PREFIX)):
        frame[column] = frame[column].map(_as_written)
    frame["method"] = [method_label(r, s) for r, s in zip(frame["router"], frame["strategy"], strict=True)]
    if SWEPT_VARIANT.name in frame.columns:  # a sweep's named variant is the method it compares
        frame["method"] = frame[SWEPT_VARIANT.name].where(frame[SWEPT_VARIANT.name].notna(), frame["method"])
    frame = combine_per_domain_models(frame)
    named = (SWEPT_SEED.name, SWEPT_VARIANT.name)
    params = sorted(c for c in frame.columns if c.startswith(PARAM_PREFIX) and c not in named)
    keys = [*params, "num_experts", "precision"]
    frame["candidate"] = [
        " ".join(f"{k}={v}" for k, v in zip(keys, row, strict=True)) for row in frame[keys].itertuples(index=False)
    ]
    if SWEPT_SEED.name in frame.columns:  # a swept seed is a seed, not a candidate
        frame["seed"] = frame[SWEPT_SEED.name].fillna(frame["seed"]).astype(int)
    return frame


def check_selection(frame: pd.DataFrame, select: str | None) -> None:
    """``select`` (None: the task metric) must be one of SELECTION_METRICS with a finite ``all`` value somewhere.

    Raises ReportError naming it and the metrics it may be.
    """
    if select is None:
        return
    if select not in SELECTION_METRICS:
        choices = ", ".join(SELECTION_METRICS)
        raise ReportError(f"--select {select}: runs are selected by one of {choices} (the higher, the better)")
    finite = frame[np.isfinite(frame["value"]) & (frame["domain"] == ALL_DOMAINS) & (frame["metric"] == select)]
    if finite.empty:
        raise ReportError(f"--select {select}: the results hold no finite {ALL_DOMAINS!r}-domain {select}")


def last_evaluations(frame: pd.DataFrame) -> pd.DataFrame:
    """Each run's rows at its last evaluated step; raises nothing."""
    last = frame.groupby(["run", *RUN_KEYS])["step"].transform("max")
    return frame[frame["step"] == last]


def selected(frame: pd.DataFrame, by: str | None = None) -> pd.DataFrame:
    """Last-evaluation rows of each method's selected candidate (best mean ``all`` value of ``by`` over seeds).

    ``by`` None is the task metric: accuracy or ap, whichever the results hold (results
    from :func:`load_results` hold one); else a metric of SELECTION_METRICS (:func:`check_selection`).
    A candidate without a finite mean (every seed NaN: a diverged run) cannot be selected; a method with
    no other is left out (see :func:`unscored_methods`). Raises nothing.
    """
    last = last_evaluations(frame)
    wanted = list(TASK_METRICS.values()) if by is None else [by]
    scores = last[(last["domain"] == ALL_DOMAINS) & last["metric"].isin(wanted)]
    means = scores.groupby(["method", "candidate"])["value"].mean().reset_index()
    means = means[np.isfinite(means["value"])]
    best = means.loc[means.groupby("method")["value"].idxmax(), ["method", "candidate"]]
    return last.merge(best, on=["method", "candidate"])


def unscored_methods(frame: pd.DataFrame, by: str | None = None) -> list[str]:
    """Methods with no finite ``all`` value of ``by`` (None: the task metric) at their last evaluation, so in
    no table or figure. Raises nothing."""
    return sorted(set(frame["method"]) - set(selected(frame, by)["method"]))


def domains_of(frame: pd.DataFrame) -> list[str]:
    """Domains in the order the results list them (the mixture's order); raises nothing."""
    return [d for d in dict.fromkeys(frame["domain"]) if d != ALL_DOMAINS]
