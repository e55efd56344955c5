"""The driver's side of a run: Ray, the ``TorchTrainer``, and live progress.

With no address (and no ``RAY_ADDRESS``) ``ray.init`` starts a local Ray
that serves this process alone, so it is bound to the loopback interface:
its GCS, raylet, object manager, workers and agents listen on 127.0.0.1
only (token authentication stays off, as nothing outside the machine can
connect). A Ray meant to be reachable is started on purpose with ``ray
start --head`` and given as ``address`` (docs/training.md). With an
address, the same command runs on that cluster. The plan is ``ray.put``
once and its ObjectRef travels in the train-loop config. ``fit()`` runs on
the main thread -- there Ray Train turns SIGINT (Ctrl-C, or ``gemlab jobs
stop`` with the runtime env's ``RAY_JOB_STOP_SIGNAL``) into a graceful
abort that stops the workers and withdraws the run's resource request --
while a reader thread drains the progress queue that rank 0 fills, so the
user sees one line per evaluation instead of Ray's logs.
"""

from __future__ import annotations

import logging
import os
import queue as queue_errors
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from gemlab.engine.config import ConfigError, as_plain, identity_digest, worker_range
from gemlab.engine.loop import train_loop
from gemlab.engine.model import checkpointed_experts
from gemlab.engine.prepare import Prepared, plan_fingerprint

QUIET_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_TRAIN_METRICS_ENABLED": "0"}
# Ray's single-machine mode (its default on macOS and Windows): the node's address is 127.0.0.1, so every
# server binds the loopback interface. Ray reads it when ``ray`` is first imported, so it is set before that.
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


class RunStopped(RuntimeError):
    """The run was stopped by SIGINT (Ctrl-C, ``gemlab jobs stop``) and aborted gracefully; its checkpoints stay."""


class RunFailed(RuntimeError):
    """The run failed for good: a worker raised more often than ``trainer.max_failures`` allows."""


@dataclass
class RunResult:
    prepared: Prepared
    history: list[dict[str, Any]]
    workers: list[dict[str, Any]] = field(default_factory=list)  # each worker start: rank, experts, plan digest
    seconds: float = 0.0
    first_step_seconds: float | None = None  # from launch (plan put, Ray up) to the end of the first step


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """``values`` in ``os.environ`` inside the block (a variable already set is kept); as before afterwards."""
    added = {key: value for key, value in values.items() if key not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def ensure_ray(address: str | None, verbose: bool) -> None:
    """Connect to ``address`` (or RAY_ADDRESS), else start a local Ray bound to 127.0.0.1; reuse one initialised.

    Call it before anything imports ``ray`` in this process: the loopback switch is read at that import. If
    it came too late, the local Ray listens on every interface, and a warning says so. The switch is set
    only while Ray is imported and started (its own processes inherit it), not for what this process
    starts later: a ``ray start`` of a worker node refuses to run under it.
    """
    local = address is None and "RAY_ADDRESS" not in os.environ
    if local:
        # a Ray started here serves this process alone: a stray ~/.ray/auth_token must not switch on token auth
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    with _environment(LOOPBACK_ENV if local else {}):
        import ray

        if ray.is_initialized():
            return
        for key, value in QUIET_ENV.items():
            os.environ.setdefault(key, value)
        ray.init(
            address=address,
            log_to_driver=verbose,
            logging_level=logging.INFO if verbose else logging.WARNING,
            runtime_env={"env_vars": QUIET_ENV},
        )
    node = ray.util.get_node_ip_address()
    if local and node not in ("127.0.0.1", "::1"):
        print(f"gemlab: warning: the local Ray listens on {node}, not only on 127.0.0.1", file=sys.stderr)


def check_resources(prepared: Prepared) -> None:
    """Refuse more workers than the cluster has CPUs (or GPUs) for, before any worker is started."""
    import ray

    trainer = prepared.cfg.trainer
    minimum, _ = worker_range(prepared.cfg)
    available = ray.cluster_resources()
    needs = {"CPU": minimum * trainer.cpus_per_worker, **({"GPU": minimum} if trainer.use_gpu else {})}
    for resource, amount in needs.items():
        if available.get(resource, 0) < amount:
            raise ConfigError(
                f"trainer.num_workers={minimum} needs {amount:g} {resource}s, "
                f"the Ray cluster has {available.get(resource, 0):g}"
            )


def make_trainer(prepared: Prepared, progress=None, callbacks: Sequence = ()):
    """The run's ``TorchTrainer``; the plan (and an adapted run's parent) is ``ray.put`` here, once, and travels
    as an ObjectRef.

    ``progress``: a ``ray.util.queue.Queue`` for rank 0's records (None: no live progress);
    ``callbacks``: Ray Train callbacks, e.g. Tune's report callback when the run is a sweep trial.
    """
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    shared_ref = ray.put({"plan": prepared.plan, "table": prepared.table, "adaptation": prepared.adaptation})
    cfg = prepared.cfg
    minimum, maximum = worker_range(cfg)
    meta = {
        "plan_fingerprint": plan_fingerprint(prepared.plan),
        "num_experts": checkpointed_experts(cfg),
        "identity_digest": identity_digest(cfg),
    }
    return TorchTrainer(
        train_loop,
        train_loop_config={
            "cfg": as_plain(cfg),
            "shared": shared_ref,
            "run_dir": prepared.run_dir.uri,
            "meta": meta,
            "progress": progress,
        },
        scaling_config=ScalingConfig(
            num_workers=minimum if minimum == maximum else (minimum, maximum),
            use_gpu=cfg.trainer.use_gpu,
            resources_per_worker={"CPU": cfg.trainer.cpus_per_worker, **({"GPU": 1} if cfg.trainer.use_gpu else {})},
        ),
        run_config=RunConfig(
            name=prepared.name,
            storage_path=prepared.run_dir.parent.uri,  # a folder or an object-store URI: Ray opens both
            failure_config=FailureConfig(max_failures=cfg.trainer.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.trainer.keep_checkpoints),
            callbacks=list(callbacks),
        ),
    )


def run_training(prepared: Prepared, on_event: Callable[[dict[str, Any]], None]) -> RunResult:
    """Fit the run on the connected Ray; ``on_event`` sees each worker start and each evaluation record.

    Raises RunStopped when SIGINT stopped the run, RunFailed when it failed for good, and what ``on_event``
    raised on the reader thread once the fit has ended.
    """
    import ray
    from ray.train import TrainingFailedError
    from ray.util.queue import Queue

    check_resources(prepared)
    started = time.perf_counter()
    progress = Queue()
    result = RunResult(prepared, [])
    fitted, reader_errors = threading.Event(), []

    def handle(event: dict[str, Any]) -> None:
        if event["event"] == "start":
            result.workers.append(event)
        elif event["event"] == "first_step" and result.first_step_seconds is None:
            result.first_step_seconds = time.perf_counter() - started
        on_event(event)

    def read() -> None:
        try:
            while not (fitted.is_set() and progress.empty()):
                try:
                    handle(progress.get(timeout=0.2))
                except queue_errors.Empty:
                    continue
        except BaseException as error:  # handed to the main thread, which re-raises it
            reader_errors.append(error)

    reader = threading.Thread(target=read, name="gemlab-progress", daemon=True)
    reader.start()
    try:
        outcome = make_trainer(prepared, progress).fit()  # on the main thread: see the module docstring
    except SystemExit:  # how Ray Train's SIGINT handler ends ``fit()`` once it has aborted the run
        raise RunStopped(f"{prepared.name} was stopped") from None
    except TrainingFailedError as error:
        raise RunFailed(str(error)) from None
    finally:
        fitted.set()
        reader.join()
        ray.kill(progress.actor)
    if reader_errors:
        raise reader_errors[0]
    result.history = outcome.return_value or []
    result.seconds = time.perf_counter() - started
    return result
