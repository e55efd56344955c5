"""Checkpoint shards keyed by expert id, so a run saved on W workers restores on any W'.

One checkpoint folder holds:

* ``shared.pt`` (rank 0) -- every non-expert weight and buffer, and their optimizer state;
* ``expert-0003.pt`` (the first rank of expert 3's replica group) -- that expert's
  weights across all MoE layers, and their optimizer state;
* ``meta.json`` and ``history.json`` (rank 0) -- step, plan fingerprint, config digest, and every
  evaluation so far, so a resumed run's results table is complete.

There is no sampler or RNG state to save: batches and per-step random
streams are pure functions of (seed, rank, step). Files load with
``torch.load(weights_only=True)``: a checkpoint can hold tensors, never code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gemlab.engine.config import ConfigError
from gemlab.engine.parallel import WorkerRole, expert_parameters
from gemlab.storage import Location

SHARED_FILE, META_FILE, HISTORY_FILE = "shared.pt", "meta.json", "history.json"
RAY_SNAPSHOT = "checkpoint_manager_snapshot.json"  # Ray Train's record of the checkpoints it registered


def expert_file(expert: int) -> str:
    return f"expert-{expert:04d}.pt"


class CheckpointMismatch(ConfigError):
    """A checkpoint from another plan, expert count or config: loading it would mix unrelated shards."""


def _optimizer_state(optimizer: torch.optim.Optimizer, named: list[tuple[str, nn.Parameter]]) -> dict[str, Any]:
    return {name: dict(optimizer.state[p]) for name, p in named if p in optimizer.state}


def write_checkpoint(
    folder: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    role: WorkerRole,
    meta: dict[str, Any],
    history: list[dict[str, Any]],
) -> None:
    """This rank's share of the checkpoint into ``folder`` (Ray merges every rank's folder into one)."""
    experts = expert_parameters(model)
    expert_names = {name for pairs in experts.values() for name, _ in pairs}
    if role.rank == 0:
        shared_named = [(n, p) for n, p in model.named_parameters() if n not in expert_names]
        state = {k: v for k, v in model.state_dict().items() if k not in expert_names}
        torch.save({"model": state, "optimizer": _optimizer_state(optimizer, shared_named)}, folder / SHARED_FILE)
        (folder / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
        (folder / HISTORY_FILE).write_text(json.dumps(history))
    for expert, named in experts.items():
        if role.expert_groups[expert][0] == role.rank:
            state = {name: p.detach() for name, p in named}
            torch.save({"model": state, "optimizer": _optimizer_state(optimizer, named)}, folder / expert_file(expert))


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


def read_checkpoint(
    folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None, expected: dict[str, Any]
) -> tuple[int, list[dict[str, Any]]]:
    """Load the shared weights and this worker's experts into ``model`` (and ``optimizer``); (step, history)."""
    meta = check_meta(folder, expected)
    shards = [torch.load(folder / SHARED_FILE, map_location="cpu", weights_only=True)]
    for expert in expert_parameters(model):
        path = folder / expert_file(expert)
        if not path.exists():
            raise CheckpointMismatch(f"checkpoint {folder}: no shard of expert {expert} ({path.name})")
        shards.append(torch.load(path, map_location="cpu", weights_only=True))
    model.load_state_dict({k: v for shard in shards for k, v in shard["model"].items()}, strict=True)
    saved = {k: v for shard in shards for k, v in shard["optimizer"].items()}
    for name, p in model.named_parameters():
        if optimizer is not None and name in saved:
            optimizer.state[p] = {k: v.clone() if torch.is_tensor(v) else v for k, v in saved[name].items()}
    return int(meta["step"]), read_history(folder)


def _registered(run_dir: Location) -> set[str] | None:
    """The checkpoint folders Ray Train registered (all ranks' uploads done), or None without a readable record."""
    try:
        snapshot = json.loads((run_dir / RAY_SNAPSHOT).read_text())
        return {result["checkpoint_dir_name"] for result in snapshot["checkpoint_results"]}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _readable_step(folder: Location) -> int | None:
    try:
        json.loads((folder / HISTORY_FILE).read_text())
        return int(json.loads((folder / META_FILE).read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def latest_checkpoint(run_dir: Location) -> tuple[int, Location] | None:
    """(step, folder) of the run's newest complete checkpoint, or None.

    Complete: registered by Ray Train (when its record exists) and with readable meta and history. A worker
    group stopped mid-upload -- a sweep trial that the scheduler stops -- can leave a newer folder half
    copied; it is skipped.
    """
    registered = _registered(run_dir)
    steps = []
    for folder in run_dir.folders("checkpoint-"):
        if registered is None or folder.name in registered:
            step = _readable_step(folder)
            if step is not None:
                steps.append((step, folder))
    return max(steps, key=lambda pair: pair[0], default=None)


def read_history(folder: Path | Location) -> list[dict[str, Any]]:
    """The evaluation records saved with a checkpoint, from a local folder or the run's storage."""
    return json.loads((folder / HISTORY_FILE).read_text())
