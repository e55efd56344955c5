"""Reading results tables, and the DomainBed-style selection every table and figure starts from.

A *run* is one (method, candidate, seed): a method is the router (with its
planner strategy when that is not GEM's own), a candidate is one setting of
the swept parameters. Each run is read at its last evaluation, as DomainBed
reads the final checkpoint. Per method, the candidate with the best mean
``all``-domain accuracy over its seeds is selected, and its seeds give the
mean ± std. With a single evaluation split, selection and report share that
split (an optimistic, oracle-style selection); say so when you quote it.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from gemlab.errors import GemlabError
from gemlab.storage import Location, StorageError

ALL = "all"
RUN_KEYS = ["method", "candidate", "seed"]


class ReportError(GemlabError, ValueError):
    """Unreadable or empty results; the message names the file."""


def results_files(paths: Iterable[str | Path]) -> list[Location]:
    """Each path (or storage URI) as given, or every ``results.parquet`` under a folder."""
    files = []
    for given in paths:
        try:
            path = Location.parse(given)
        except StorageError as error:
            raise ReportError(str(error)) from None
        if path.is_dir():
            found = path.files_named("results.parquet")
            if not found:
                raise ReportError(f"{path}: no results.parquet under this folder")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise ReportError(f"{path}: no such file or folder")
    return files


def method_label(router: str, strategy: str | None) -> str:
    return router if strategy in (None, "gem") or pd.isna(strategy) else f"{router}:{strategy}"


def load_results(paths: Iterable[str | Path]) -> pd.DataFrame:
    """All rows of the given results files, with ``method`` and ``candidate`` columns added."""
    frames = []
    for file in results_files(paths):
        try:
            frame = pd.read_parquet(io.BytesIO(file.read_bytes()))
        except Exception as error:  # pyarrow raises several types for a file that is not Parquet
            raise ReportError(f"{file}: not a readable results table ({error})") from None
        missing = {"router", "strategy", "seed", "domain", "metric", "step", "value", "run"} - set(frame.columns)
        if missing:
            raise ReportError(f"{file}: not a gemlab results table (missing columns {sorted(missing)})")
        frames.append(frame)
    frame = pd.concat(frames, ignore_index=True)
    if frame.empty:
        raise ReportError("results: the files hold no rows")
    frame["method"] = [method_label(r, s) for r, s in zip(frame["router"], frame["strategy"], strict=True)]
    params = sorted(c for c in frame.columns if c.startswith("param:") and c != "param:seed")
    keys = [*params, "num_experts", "precision"]
    frame["candidate"] = [
        " ".join(f"{k}={v}" for k, v in zip(keys, row, strict=True)) for row in frame[keys].itertuples(index=False)
    ]
    if "param:seed" in frame.columns:  # a swept seed is a seed, not a candidate
        frame["seed"] = frame["param:seed"].fillna(frame["seed"]).astype(int)
    return frame


def last_evaluations(frame: pd.DataFrame) -> pd.DataFrame:
    """Each run's rows at its last evaluated step."""
    last = frame.groupby(["run", *RUN_KEYS])["step"].transform("max")
    return frame[frame["step"] == last]


def selected(frame: pd.DataFrame) -> pd.DataFrame:
    """Last-evaluation rows of each method's selected candidate (best mean ``all`` accuracy over seeds)."""
    last = last_evaluations(frame)
    scores = last[(last["domain"] == ALL) & (last["metric"] == "accuracy")]
    means = scores.groupby(["method", "candidate"])["value"].mean().reset_index()
    best = means.loc[means.groupby("method")["value"].idxmax(), ["method", "candidate"]]
    return last.merge(best, on=["method", "candidate"])


def domains_of(frame: pd.DataFrame) -> list[str]:
    """Domains in the order the results list them (the mixture's order)."""
    return [d for d in dict.fromkeys(frame["domain"]) if d != ALL]
