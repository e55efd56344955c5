"""Where a run continues: the newest checkpoint that verifies, and the names its new checkpoints take.

A checkpoint verifies when its ``meta.json`` parses, records a step and the
size and SHA-256 of every file the checkpoint must hold (shared weights,
history, one shard per expert), and every one of those files is present
with exactly that size and digest. Anything else -- a shard cut short by a
full disk, an emptied file, a meta edited by hand, an upload stopped half
way -- is *damaged*: skipped with a warning naming the file, and the run
continues from the next older checkpoint that verifies. Only when
checkpoints exist and none verifies does the run stop (:class:`NoUsableCheckpoint`):
starting over from scratch silently would throw away what was trained.

Only checkpoints that Ray Train registered are candidates (its
``checkpoint_manager_snapshot.json``, where readable): Ray registers a
checkpoint once every rank's upload is done. Damaged folders are left in
place -- Ray's snapshot lists them, and Ray refuses to restore a run whose
listed checkpoints are gone -- so a run that continues past one gives its
new checkpoints names no existing folder has (:func:`checkpoint_name`), and
Ray later removes the damaged folder as it ages out of ``keep_checkpoints``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from gemlab.engine.checkpoint import (
    CHECKPOINT_PREFIX,
    HISTORY_FILE,
    META_FILE,
    RAY_SNAPSHOT,
    SHARED_FILE,
    CheckpointDamaged,
    expert_file,
)
from gemlab.storage import Location


class NoUsableCheckpoint(CheckpointDamaged):
    """The run has checkpoints and every one of them is damaged."""


@dataclass(frozen=True)
class ResumePoint:
    """The checkpoint a run continues from (None: from scratch), what was passed over, and the names in use."""

    folder: Location | None
    step: int
    skipped: tuple[str, ...]  # one "<folder>: <what is wrong>" per damaged checkpoint newer than ``folder``
    taken: frozenset[str]  # every checkpoint folder name present: new checkpoints must not reuse one

    def warnings(self) -> list[str]:
        """One line per damaged checkpoint, naming the damaged file and the checkpoint used instead."""
        instead = f"continuing from {self.folder.name} (step {self.step})" if self.folder else "none is usable"
        return [f"damaged checkpoint skipped: {problem}; {instead}" for problem in self.skipped]

    def require_usable(self) -> None:
        """Raises NoUsableCheckpoint when checkpoints exist and none verifies."""
        if self.folder is None and self.skipped:
            listed = "; ".join(self.skipped)
            raise NoUsableCheckpoint(
                f"no usable checkpoint: {listed}. Restore the files, or train under another name "
                "(or delete the run's folder) to start from scratch"
            )


def _registered(run_dir: Location) -> set[str] | None:
    """The checkpoint folders Ray Train registered (all ranks' uploads done), or None without a readable record."""
    try:
        snapshot = json.loads((run_dir / RAY_SNAPSHOT).read_text())
        return {result["checkpoint_dir_name"] for result in snapshot["checkpoint_results"]}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _digest(file: Location) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    with file.filesystem.open_input_stream(file.path) as stream:
        while chunk := stream.read(1 << 22):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _recorded_files(meta_file: Location) -> tuple[int, dict[str, dict]]:
    """(step, file name -> {bytes, sha256}) from a meta.json; raises CheckpointDamaged naming what is wrong."""
    try:
        meta = json.loads(meta_file.read_text())
        step, files, experts = meta["step"], meta["files"], meta["num_experts"]
    except FileNotFoundError:
        raise CheckpointDamaged(f"{meta_file}: missing") from None
    except (OSError, UnicodeDecodeError) as error:
        raise CheckpointDamaged(f"{meta_file}: unreadable ({error})") from None
    except ValueError:
        raise CheckpointDamaged(f"{meta_file}: not valid JSON") from None
    except (KeyError, TypeError):
        raise CheckpointDamaged(f"{meta_file}: records no step, expert count and file digests") from None
    well_formed = (
        all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (step, experts))
        and isinstance(files, dict)
        and all("/" not in name and name not in (".", "..") and isinstance(r, dict) for name, r in files.items())
    )
    if not well_formed:
        raise CheckpointDamaged(f"{meta_file}: malformed step, expert count or file records")
    missing = sorted({SHARED_FILE, HISTORY_FILE, *(expert_file(e) for e in range(experts))} - set(files))
    if missing:
        raise CheckpointDamaged(f"{meta_file}: records no digest of {missing}")
    return step, files


def verified_step(folder: Location) -> int:
    """The step of a checkpoint whose every file matches its record; raises CheckpointDamaged naming the file.

    Reads every file once (sizes alone would miss a file overwritten with other bytes of the same length).
    """
    step, files = _recorded_files(folder / META_FILE)
    for name, record in sorted(files.items()):
        file = folder / name
        try:
            size, digest = _digest(file)
        except FileNotFoundError:
            raise CheckpointDamaged(f"{file}: missing") from None
        except OSError as error:
            raise CheckpointDamaged(f"{file}: unreadable ({error})") from None
        if size != record.get("bytes"):
            raise CheckpointDamaged(f"{file}: {size} bytes, {record.get('bytes')} when saved (cut short or changed)")
        if digest != record.get("sha256"):
            raise CheckpointDamaged(f"{file}: its SHA-256 differs from the one recorded when it was saved")
    return step


def find_resume_point(run_dir: Location) -> ResumePoint:
    """The newest registered checkpoint of ``run_dir`` that verifies, and every newer one found damaged.

    Deterministic for given storage contents, so the driver and rank 0 choose alike. Never raises for
    damage (see :meth:`ResumePoint.require_usable`); raises OSError when the storage cannot be listed.
    """
    folders = run_dir.folders(CHECKPOINT_PREFIX)
    registered = _registered(run_dir)
    candidates = [f for f in reversed(folders) if registered is None or f.name in registered]
    taken = frozenset(f.name for f in folders)
    skipped = []
    for folder in candidates:
        try:
            return ResumePoint(folder, verified_step(folder), tuple(skipped), taken)
        except CheckpointDamaged as damage:
            skipped.append(str(damage))
    return ResumePoint(None, 0, tuple(skipped), taken)


def checkpoint_name(step: int, taken: frozenset[str]) -> str:
    """``checkpoint-0000030``, or with ``-1``, ``-2``… when a (damaged) folder already has that name.

    The suffix sorts after the plain name and before the next step, so folder order stays step order.
    """
    name, suffix = f"{CHECKPOINT_PREFIX}{step:07d}", 0
    while (f"{name}-{suffix}" if suffix else name) in taken:
        suffix += 1
    return f"{name}-{suffix}" if suffix else name
