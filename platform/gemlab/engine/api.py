"""The engine as other packages use it: compose a config, prepare a run, fit it, read back what it left.

    cfg = compose_config(["experiment=tiny"])
    prepared = prepare(cfg)                  # data, plan, run folder: bad input fails here, before Ray
    ensure_ray(cfg.address, cfg.trainer.verbose)
    result = train(prepared, print)          # live events; or fit(prepared, callbacks) inside a Tune trial
    write_run_results(prepared, result.history)

``gemlab train``, ``gemlab sweep`` (its driver and its trials) and the
benchmarks go through these functions rather than the engine's modules, so
that the modules can change behind them. Importing this module loads no
torch and no Ray: each function imports what it needs when it is called,
and Ray must first be imported by :func:`ensure_ray` (it binds a local Ray
to the loopback interface at that import).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from gemlab.engine.config import DEFAULT_CONFIG_DIR, ConfigError, as_plain, compose_config, identity
from gemlab.storage import Location

if TYPE_CHECKING:
    import pyarrow as pa

    from gemlab.engine.launch import RunResult
    from gemlab.engine.prepare import Prepared

__all__ = [
    "DEFAULT_CONFIG_DIR",
    "ConfigError",
    "SavedRun",
    "as_plain",
    "checked_storage",
    "compose_config",
    "ensure_ray",
    "fit",
    "generate_data",
    "identity",
    "portable_overrides",
    "prepare",
    "read_saved_run",
    "train",
    "write_run_results",
    "write_table",
]


def portable_overrides(overrides: Sequence[str], cfg: DictConfig) -> list[str]:
    """``overrides`` plus absolute data and backbone paths, for runs that start in another directory.

    Sweep trials run in Tune's folders, so a relative ``data.path`` would name other files there.
    Raises nothing.
    """
    from gemlab.engine.data import resolve

    extra = [f"data.path={resolve(cfg.data.path)}"]
    if cfg.affinity.backbone != "init":
        extra.append(f"affinity.backbone={resolve(cfg.affinity.backbone)}")
    return [*overrides, *extra]


def checked_storage(cfg: DictConfig) -> Location:
    """``storage_path``, checked writable without creating anything; raises ConfigError naming it."""
    from gemlab.engine import prepare as preparation

    return preparation.checked_storage(cfg)


def generate_data(cfg: DictConfig) -> None:
    """Generate the configured data where it is generated (digits) and check it reads; raises ConfigError.

    Done once on the driver, so that parallel runs never generate the same folder at once.
    """
    from gemlab.engine.data import build_mixture

    build_mixture(cfg.data, cfg.seed, generate=True)


def prepare(cfg: DictConfig, plan_cache: Location | None = None) -> Prepared:
    """Data, plan and run folder of ``cfg`` (``plan_cache``: plans keyed by their inputs, shared by trials).

    Raises ConfigError naming the key or file before any worker starts.
    """
    from gemlab.engine import prepare as preparation

    return preparation.prepare(cfg, plan_cache=plan_cache)


def ensure_ray(address: str | None, verbose: bool) -> None:
    """Connect to ``address`` (or RAY_ADDRESS), else start a local Ray bound to 127.0.0.1; raises what Ray raises."""
    from gemlab.engine import launch

    launch.ensure_ray(address, verbose)


def train(prepared: Prepared, on_event: Callable[[dict[str, Any]], None]) -> RunResult:
    """Fit a prepared run on the connected Ray; ``on_event`` sees each worker start and each evaluation.

    Raises RunStopped (SIGINT), RunFailed (failed more often than ``trainer.max_failures`` allows) and
    ConfigError when the cluster has too few CPUs or GPUs for the workers.
    """
    from gemlab.engine.launch import run_training

    return run_training(prepared, on_event)


def fit(prepared: Prepared, callbacks: Sequence[Any] = ()) -> Any:
    """Fit a prepared run without live progress (a Tune trial: ``callbacks`` report to Tune); Ray's Result.

    Raises what ``TorchTrainer.fit`` raises.
    """
    from gemlab.engine.launch import make_trainer

    return make_trainer(prepared, callbacks=callbacks).fit()


def write_run_results(prepared: Prepared, history: list[dict[str, Any]]) -> Location:
    """The run's ``results.parquet``, the cross-expert matrix added to its last evaluation, and the model's
    parameter counts and the plan's quality as rows; raises OSError."""
    from gemlab.engine.cross_expert import with_cross_expert
    from gemlab.engine.outputs import run_constants, write_results

    history = with_cross_expert(prepared.cfg, prepared.run_dir, history)
    constants = run_constants(prepared.parameters, prepared.plan)
    return write_results(prepared.run_dir, prepared.cfg, prepared.name, history, constants)


def write_table(table: pa.Table, path: Location) -> Location:
    """Write a results table (a sweep's: its trials' tables together) as Parquet, whole or not at all.

    Raises OSError when the storage cannot be written.
    """
    from gemlab.engine import outputs

    return outputs.write_table(table, path)


@dataclass(frozen=True)
class SavedRun:
    """What a run's newest verified checkpoint holds, read back: its table and its last evaluation's metrics."""

    table: pa.Table
    step: int
    metrics: dict[str, float]  # as the run reported them to Ray (and so to Tune): accuracy or ap, per domain, …


def read_saved_run(cfg: DictConfig, run_dir: Location, name: str, extra: dict[str, Any]) -> SavedRun | None:
    """The results of a run trained elsewhere (a sweep trial), from its newest checkpoint that verifies.

    ``cfg``: the run's config as composed (its paths are made absolute here, as :func:`prepare` made them
    for the run). The history saved with the checkpoint gets the cross-expert matrix on its last
    evaluation; TensorBoard events are written from it once, when the run has none (trials print no live
    progress). The model's parameter counts come from the run's ``run.json`` (none without one), the plan's
    quality from its ``plan.json``.
    ``extra``: the table's constant columns. None when the run has no usable checkpoint. Raises OSError
    when the storage cannot be read, CheckpointMismatch for a checkpoint of another config, ConfigError
    for a damaged ``run.json``. An adapted run's domains and experts are those its ``run.json`` records
    (the parent's and the added ones), not the composed config's.
    """
    from gemlab.engine.adapt import with_domains_resolved
    from gemlab.engine.checkpoint import read_history
    from gemlab.engine.cross_expert import with_cross_expert
    from gemlab.engine.loop import flat_metrics
    from gemlab.engine.outputs import TENSORBOARD_DIR, TensorBoardLog, results_table, run_constants
    from gemlab.engine.parameters import RECORD_KEY
    from gemlab.engine.prepare import PLAN_FILE, RUN_FILE, read_plan, read_run_record, with_absolute_paths
    from gemlab.engine.resume import find_resume_point

    resume = find_resume_point(run_dir)
    if resume.folder is None:
        return None
    record = run_dir / RUN_FILE  # what prepare() wrote before the trial trained; without it, no counts
    trained = read_run_record(record) if record.is_file() else {}
    cfg = with_domains_resolved(with_absolute_paths(cfg), trained.get("identity"))
    history = with_cross_expert(cfg, run_dir, read_history(resume.folder))
    if not (run_dir / TENSORBOARD_DIR).exists():
        log = TensorBoardLog(run_dir)
        for evaluation in history:
            log.add(evaluation)
        log.close()
    parameters = trained.get(RECORD_KEY)
    plan = read_plan(run_dir / PLAN_FILE) if (run_dir / PLAN_FILE).is_file() else None
    table = results_table(cfg, name, history, extra, run_constants(parameters, plan))
    return SavedRun(table, history[-1]["step"], flat_metrics(history[-1]))
