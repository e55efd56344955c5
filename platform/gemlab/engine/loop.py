"""The Ray Train loop: every worker runs :func:`train_loop`; rank 0 also keeps the run's history.

Every ``eval_interval`` steps all ranks evaluate their domains, rank 0
gathers the results into one record, and every rank reports its checkpoint
shard in the same ``ray.train.report`` call (a barrier). Rank 0 also pushes
the record to the driver's progress queue, which prints one line per
evaluation and writes TensorBoard events while the run goes on.

At every start of the worker group -- the first, and each restart after a
failure or a change of nodes -- rank 0 chooses the checkpoint to continue
from with :func:`~gemlab.engine.resume.find_resume_point` (the newest that
verifies, the same function the driver runs) and sends its choice to the
other ranks. An adapted run without a checkpoint of its own starts from its
parent's (:mod:`gemlab.engine.adapt`). Ray's own ``get_checkpoint()`` is not used: it is the latest
registered checkpoint, whether or not its files are intact.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch.distributed as dist

from gemlab.engine.adapt import load_parent_weights
from gemlab.engine.checkpoint import read_checkpoint, write_checkpoint
from gemlab.engine.forgetting import adaptation_metrics
from gemlab.engine.outputs import domain_metrics, domain_scores, mean_score
from gemlab.engine.resume import ResumePoint, checkpoint_name, find_resume_point
from gemlab.engine.worker import Worker, role_summary
from gemlab.results_schema import ALL_DOMAINS, heldout_metric
from gemlab.storage import Location


def _gather(value: Any) -> list[Any]:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [value]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def _from_rank_zero(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (a collective: every rank calls it)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def _resume_point(run_dir: Location, rank: int) -> ResumePoint:
    """Rank 0's choice of checkpoint, on every rank; rank 0 also prints what it skipped to the worker log."""
    point = find_resume_point(run_dir) if rank == 0 else None
    if point is not None:
        for line in point.warnings():
            print(f"gemlab: {line}", flush=True)
    point = _from_rank_zero(point)
    point.require_usable()
    return point


class _Window:
    """Step statistics since the last evaluation, on one rank."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = defaultdict(float)
        self.steps, self.started, self.cpu_started = 0, time.perf_counter(), time.process_time()

    def add(self, stats: dict[str, float]) -> None:
        self.steps += 1
        for key, value in stats.items():
            self.sums[key] += value

    def summary(self) -> dict[str, Any]:
        means = {k: v / self.steps for k, v in self.sums.items()}
        return {
            "means": means,
            "steps": self.steps,
            "seconds": time.perf_counter() - self.started,
            "cpu_seconds": time.process_time() - self.cpu_started,  # every thread of the worker process
        }


def _record(worker: Worker, window: _Window, step: int) -> dict[str, Any] | None:
    """Gather every rank's evaluation and step statistics; rank 0 gets the run's record, others None."""
    summary = window.summary()  # before evaluating: samples/s and CPU time are training alone
    mine = {
        "evaluation": worker.evaluate(),
        "window": summary,
        "mass": worker.role.mass,
        "samples": window.steps * worker.cfg["trainer"]["batch_size"] if worker.sampler else 0,
        "bytes": worker.sync.bytes_per_step if worker.sync.active else 0,
    }
    ranks = _gather(mine)
    if worker.role.rank != 0:
        return None
    names = worker.mixture.names
    evaluation = {names[d]: result for r in ranks for d, result in r["evaluation"].items()}
    train: dict[str, float] = defaultdict(float)
    for r in ranks:  # the mixture objective: each rank's mean weighted by its mass
        for key, value in r["window"]["means"].items():
            train[key] += r["mass"] * value
    seconds = max(r["window"]["seconds"] for r in ranks)
    samples = sum(r["samples"] for r in ranks)
    return {
        "step": step,
        "metric": worker.task.metric,
        "domains": {name: evaluation[name] for name in names if name in evaluation},
        "heldout": [names[d] for d in worker.mixture.heldout],  # data.holdout: evaluated, never trained
        "train": dict(train),
        "samples_per_s": samples / seconds if seconds > 0 else 0.0,
        "cpu_ms_per_sample": 1000 * sum(r["window"]["cpu_seconds"] for r in ranks) / samples if samples else 0.0,
        "allreduce_bytes_per_step": sum(r["bytes"] for r in ranks),
    }


def _previews(worker: Worker) -> dict[str, Any]:
    """Every rank's preview images of its domains, by domain name, on rank 0 (a collective).

    They go to the driver's TensorBoard log with the progress event, not into the history that
    checkpoints carry.
    """
    mine = worker.task.previews(worker.model, worker.data, worker.role.eval_domains, worker.cfg["data"]["eval_split"])
    names = worker.mixture.names
    return {names[d]: image for r in _gather(mine) for d, image in r.items()}


def flat_metrics(record: dict[str, Any]) -> dict[str, float]:
    """The record as flat scalars, for ``ray.train.report`` (and Tune's schedulers): the task metric's mean and
    per-domain values (``accuracy``, ``accuracy/<domain>``; ``ap``, ``ap/<domain>``), every other run-level
    metric of the results table (``worst_group_accuracy``, ``macro_f1`` ...), the held-out domains' mean
    (``heldout_accuracy``) under leave-one-domain-out, an adapted run's mean ``adaptability`` and
    ``forgetting``, and the training losses.

    A sweep's ``metric`` may name any of them: Tune ranks and stops trials by what this reports.
    """
    metric = record["metric"]
    metrics = {"step": record["step"], metric: mean_score(record)}
    metrics.update({f"{metric}/{name}": score for name, score in domain_scores(record).items()})
    run_level = (row for row in domain_metrics(record["domains"]) if row[0] == ALL_DOMAINS and row[1] not in metrics)
    metrics.update({name: value for _, name, value in run_level})
    heldout = [record["domains"][name][metric] for name in record.get("heldout", ())]
    if heldout:
        metrics[heldout_metric(metric)] = sum(heldout) / len(heldout)
    metrics.update({name: value for domain, name, value in adaptation_metrics(record) if domain == ALL_DOMAINS})
    metrics.update({f"train/{key}": value for key, value in record["train"].items()})
    return metrics


def _maybe_fail(cfg: dict[str, Any], run_dir: Location, step: int, rank: int, world_size: int) -> None:
    """The fault-tolerance test hook: the last rank dies once at ``testing.fail_once_at_step``."""
    if cfg["testing"]["fail_once_at_step"] != step or rank != world_size - 1:
        return
    marker = run_dir / f".failed-once-at-{step}"
    if not marker.exists():
        marker.write_bytes(b"")
        raise RuntimeError(f"testing.fail_once_at_step={step}: injected worker failure on rank {rank}")


def train_loop(config: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Ray Train's ``train_loop_per_worker``; returns the run's full history on rank 0."""
    import ray
    import ray.train

    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    shared = ray.get(config["shared"])  # put once by the driver: every worker reads the same plan
    cfg, run_dir, progress = config["cfg"], Location.parse(config["run_dir"]), config.get("progress")
    worker = Worker(cfg, shared["plan"], shared["table"], rank, world_size)
    meta = dict(config["meta"])
    step, history = 0, []
    resume, adaptation = _resume_point(run_dir, rank), shared["adaptation"]
    if resume.folder is not None:
        with resume.folder.local_copy() as folder:
            step, history = read_checkpoint(folder, worker.model, worker.optimizer, meta)
    elif adaptation is not None:  # an adapted run's first start: from its parent's weights
        with Location.parse(adaptation.checkpoint).local_copy() as folder:
            load_parent_weights(worker.model, folder, adaptation.sources)
    if progress is not None:
        plan_sha = hashlib.sha256((shared["plan"].to_json() if shared["plan"] else "").encode()).hexdigest()
        progress.put(
            {
                "event": "start",
                "start_step": step,
                "checkpoint": resume.folder.name if resume.folder else None,
                "skipped": list(resume.skipped) if rank == 0 else [],
                "plan_sha256": plan_sha,
                **role_summary(worker.role),
            }
        )
    trainer = cfg["trainer"]
    window = _Window()
    while step < trainer["max_steps"]:
        step += 1
        _maybe_fail(cfg, run_dir, step, rank, world_size)
        window.add(worker.step(step))
        if window.steps == 1 and rank == 0 and progress is not None:
            progress.put({"event": "first_step", "step": step})
        if step % trainer["eval_interval"] and step != trainer["max_steps"]:
            continue
        record = _record(worker, window, step)
        if record is not None and adaptation is not None:  # what adaptability and forgetting are measured against
            record["adaptation"] = adaptation.record()
        previews = _previews(worker) if progress is not None else {}  # the same on every rank: a collective
        if record is not None:
            history.append(record)
        with tempfile.TemporaryDirectory() as folder:
            meta_now = {**meta, "step": step}
            write_checkpoint(Path(folder), worker.model, worker.optimizer, worker.role, meta_now, history, _gather)
            ray.train.report(
                flat_metrics(record) if record else {"step": step},
                checkpoint=ray.train.Checkpoint.from_directory(folder),
                checkpoint_dir_name=checkpoint_name(step, resume.taken),
            )
        if record is not None and progress is not None:
            progress.put({"event": "eval", **record, "previews": previews})
        window = _Window()
    return history if rank == 0 else None
