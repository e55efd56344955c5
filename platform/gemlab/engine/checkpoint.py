"""Checkpoint shards keyed by expert id, so a run saved on W workers restores on any W'.

One checkpoint folder holds:

* ``shared.pt`` (rank 0) -- every non-expert weight and buffer, and their optimizer state;
* ``expert-0003.pt`` (the first rank of expert 3's replica group) -- that expert's
  weights across all MoE layers, and their optimizer state;
* ``history.json`` (rank 0) -- every evaluation so far, so a resumed run's results table is complete;
* ``meta.json`` (rank 0, written last) -- step, plan fingerprint, config digest, and the size and
  SHA-256 of every other file, gathered from all ranks at save time.

A checkpoint is used only once it verifies against its own ``meta.json``: a
file truncated by a full disk, emptied, or overwritten since the save is
found before any worker loads it, and the run continues from the newest
checkpoint that does verify (see :func:`find_resume_point`). The driver and
rank 0 run that same function on the same storage, and rank 0 hands its
choice to the other ranks, so every process continues from one checkpoint.

There is no sampler, RNG or lr-schedule state to save: batches, per-step
random streams and each step's learning rate (:class:`gemlab.engine.optim.LRSchedule`)
are pure functions of (seed, rank, step). The optimizer's per-parameter
state (AdamW's and Adam's moments, SGD's momentum buffers) is saved by
parameter name, whatever the optimizer and its parameter groups. Router and
criterion state (REMoE's λ, DQRoute's statistics) are buffers of the model,
equal on every rank after each step (:mod:`gemlab.engine.router_state`), so
rank 0's ``shared.pt`` holds the world's. Files load with
``torch.load(weights_only=True)``: a checkpoint can hold tensors, never code.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gemlab.engine.config import ConfigError
from gemlab.engine.parallel import WorkerRole, expert_parameters
from gemlab.storage import Location

SHARED_FILE, META_FILE, HISTORY_FILE = "shared.pt", "meta.json", "history.json"
CHECKPOINT_PREFIX = "checkpoint-"
RAY_SNAPSHOT = "checkpoint_manager_snapshot.json"  # Ray Train's record of the checkpoints it registered
_CHUNK = 1 << 22


def expert_file(expert: int) -> str:
    return f"expert-{expert:04d}.pt"


class CheckpointMismatch(ConfigError):
    """A checkpoint from another plan, expert count or config: loading it would mix unrelated shards."""


class CheckpointDamaged(ConfigError):
    """A checkpoint file that is missing, cut short, changed since it was saved, or not loadable."""


def _file_record(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return {"bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def _optimizer_state(optimizer: torch.optim.Optimizer, named: list[tuple[str, nn.Parameter]]) -> dict[str, Any]:
    return {name: dict(optimizer.state[p]) for name, p in named if p in optimizer.state}


def write_checkpoint(
    folder: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    role: WorkerRole,
    meta: dict[str, Any],
    history: list[dict[str, Any]],
    gather: Callable[[Any], list[Any]] = lambda value: [value],
) -> None:
    """This rank's share of the checkpoint into ``folder`` (Ray merges every rank's folder into one).

    ``gather`` collects each rank's file records (a collective: every rank calls it); rank 0 writes them
    into ``meta.json``, last, so a checkpoint whose meta exists lists every file it should hold.
    """
    experts = expert_parameters(model)
    expert_names = {name for pairs in experts.values() for name, _ in pairs}
    written = []
    if role.rank == 0:
        shared_named = [(n, p) for n, p in model.named_parameters() if n not in expert_names]
        state = {k: v for k, v in model.state_dict().items() if k not in expert_names}
        torch.save({"model": state, "optimizer": _optimizer_state(optimizer, shared_named)}, folder / SHARED_FILE)
        (folder / HISTORY_FILE).write_text(json.dumps(history))
        written += [SHARED_FILE, HISTORY_FILE]
    for expert, named in experts.items():
        if role.expert_groups[expert][0] == role.rank:
            state = {name: p.detach() for name, p in named}
            torch.save({"model": state, "optimizer": _optimizer_state(optimizer, named)}, folder / expert_file(expert))
            written.append(expert_file(expert))
    records = gather({name: _file_record(folder / name) for name in written})
    if role.rank == 0:
        files = {name: record for rank_records in records for name, record in rank_records.items()}
        (folder / META_FILE).write_text(json.dumps({**meta, "files": files}, indent=2, sort_keys=True))


def check_meta(folder: Path, expected: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's meta; raises CheckpointMismatch naming what differs from ``expected``."""
    meta = json.loads((folder / META_FILE).read_text())
    for key in ("plan_fingerprint", "num_experts", "identity_digest"):
        if meta.get(key) != expected[key]:
            raise CheckpointMismatch(
                f"checkpoint {folder}: {key} is {meta.get(key)!r}, this run has {expected[key]!r}; "
                "it belongs to another plan or config and its shards would not fit"
            )
    return meta


def load_shard(path: Path) -> dict[str, Any]:
    """One ``.pt`` file; raises CheckpointDamaged naming it when it is missing or not a saved state."""
    try:
        shard = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointDamaged(f"{path}: missing") from None
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as error:
        raise CheckpointDamaged(f"{path}: not a loadable checkpoint shard ({error})") from None
    if not isinstance(shard, dict) or not {"model", "optimizer"} <= set(shard):
        raise CheckpointDamaged(f"{path}: not a gemlab checkpoint shard")
    return shard


def read_checkpoint(
    folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None, expected: dict[str, Any]
) -> tuple[int, list[dict[str, Any]]]:
    """Load the shared weights and this worker's experts into ``model`` (and ``optimizer``); (step, history).

    Raises CheckpointMismatch for a checkpoint of another plan or config (or without a shard this worker
    needs) and CheckpointDamaged for a file that will not load.
    """
    meta = check_meta(folder, expected)
    shards = [load_shard(folder / SHARED_FILE)]
    for expert in expert_parameters(model):
        path = folder / expert_file(expert)
        if not path.exists():
            raise CheckpointMismatch(f"checkpoint {folder}: no shard of expert {expert} ({path.name})")
        shards.append(load_shard(path))
    model.load_state_dict({k: v for shard in shards for k, v in shard["model"].items()}, strict=True)
    saved = {k: v for shard in shards for k, v in shard["optimizer"].items()}
    for name, p in model.named_parameters():
        if optimizer is not None and name in saved:
            optimizer.state[p] = {k: v.clone() if torch.is_tensor(v) else v for k, v in saved[name].items()}
    return int(meta["step"]), read_history(folder)


def read_history(folder: Path | Location) -> list[dict[str, Any]]:
    """The evaluation records saved with a checkpoint, from a local folder or the run's storage."""
    return json.loads((folder / HISTORY_FILE).read_text())
