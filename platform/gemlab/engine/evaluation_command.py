"""``gemlab eval``: a trained run's newest verified checkpoint, evaluated on a split of every domain.

    gemlab eval runs/quickstart-gem-1a2b3c4d                    # the run's eval split (data.eval_split)
    gemlab eval runs/quickstart-gem-1a2b3c4d --split calib --batch-size 512
    gemlab eval runs/quickstart-gem-1a2b3c4d --force-expert 2   # every domain through expert 2
    gemlab eval runs/moge_digits-metadata-1a2b3c4d --shared-expert-only   # MoGE-SE: the shared expert alone
    gemlab eval s3://bucket/runs/quickstart-gem-1a2b3c4d --out eval.parquet

RUN is a run folder as ``gemlab train`` leaves it (``run.json``, ``plan.json``
for planned routers, ``checkpoint-*``). The run's config is rebuilt from
the identity recorded in its ``run.json``, its data are read (never
generated), and the full model -- every expert -- is loaded from the
newest checkpoint that verifies. Prints a Markdown table of each domain's
metrics and their mean, and writes them as a long-form Parquet table with
the columns of ``results.parquet`` (default: ``<RUN>/eval-<split>.parquet``,
``eval-<split>-expert<E>.parquet`` with ``--force-expert``,
``eval-<split>-shared.parquet`` with ``--shared-expert-only``). The
destination is checked before the data and the checkpoint are read; the
file is written whole or not at all.
"""

from __future__ import annotations

import argparse
import errno
import re
import sys
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gemlab.results_schema import EXPERT_LOAD

if TYPE_CHECKING:
    import pyarrow as pa
    from omegaconf import DictConfig

    from gemlab.storage import Location


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "run_dir", metavar="RUN", help="a run folder as gemlab train leaves it: a path, or a storage URI (s3://…/run)"
    )
    parser.add_argument("--split", default=None, help="the split to evaluate (default: the run's data.eval_split)")
    parser.add_argument(
        "--force-expert",
        type=int,
        default=None,
        metavar="E",
        help="send every domain through expert E in every MoE layer (routers with a domain -> expert table, "
        "and the metadata router)",
    )
    parser.add_argument(
        "--shared-expert-only",
        action="store_true",
        help="every MoE layer uses its shared expert alone (MoGE-SE; routers with a shared expert)",
    )
    parser.add_argument(
        "--batch-size",
        type=_positive,
        default=None,
        metavar="N",
        help="images per forward (default: trainer.eval_batch_size)",
    )
    parser.add_argument(
        "--out",
        default=None,
        metavar="FILE",
        help="Parquet file, a path or a URI (default: <RUN>/eval-<split>[-expert<E>].parquet)",
    )


@dataclass(frozen=True)
class Evaluation:
    """One checkpoint evaluated: domain name -> the task's metrics (``expert_load`` among them)."""

    name: str  # the run's name: its folder's
    checkpoint: str  # the checkpoint folder's name
    step: int
    split: str
    expert: int | None  # the expert every domain was sent to; None: routed as trained
    shared_only: bool  # every MoE layer used its shared expert alone (MoGE-SE)
    metric: str  # the task's primary metric (accuracy, ap)
    domains: dict[str, dict[str, Any]]

    def scalar_metrics(self) -> list[str]:
        """The metrics each domain has one number of, in the task's order (every metric but ``expert_load``)."""
        return [m for m in next(iter(self.domains.values())) if m != EXPERT_LOAD]

    def means(self) -> dict[str, float]:
        """Each scalar metric's mean over domains (NaN where a domain's is NaN), as ``results.parquet`` has it."""
        from gemlab.engine.outputs import domain_metrics
        from gemlab.results_schema import ALL_DOMAINS

        return {metric: value for domain, metric, value in domain_metrics(self.domains) if domain == ALL_DOMAINS}


def _over(defaults: dict, recorded: dict) -> dict:
    """``recorded`` merged over ``defaults``, as OmegaConf merges, except for a config group's subtree.

    Keys the run did not record (``storage_path``, worker counts, keys added since) take their defaults.
    A group's subtree (``model``, ``router``: a dict with a ``name``) of another choice than the default's
    is the run's whole: the default choice's keys (a ViT's ``depth``) are not the run's model's.
    """
    merged = dict(defaults)
    for key, value in recorded.items():
        base = defaults.get(key)
        default_name = base.get("name") if isinstance(base, dict) else None
        other_choice = isinstance(value, dict) and "name" in value and value["name"] != default_name
        if isinstance(value, dict) and isinstance(base, dict) and not other_choice:
            merged[key] = _over(base, value)
        else:
            merged[key] = value
    return merged


def run_config(run_dir: Location) -> tuple[DictConfig, dict[str, Any]]:
    """The run's config (the default config with the identity in its ``run.json`` over it) and its record.

    Raises ConfigError naming the folder when it holds no ``run.json``, naming the file when that is
    damaged, edited, or its config no longer validates, and OSError when the storage cannot be read.
    """
    from omegaconf import OmegaConf

    from gemlab.engine.config import ConfigError, as_plain, compose_config, digest_of, validate
    from gemlab.engine.prepare import RUN_FILE, read_run_record

    record_file = run_dir / RUN_FILE
    if not record_file.is_file():
        what = "no such folder" if not run_dir.exists() else f"no {RUN_FILE}, which gemlab train writes in a run folder"
        raise ConfigError(f"{run_dir}: not a run folder ({what})")
    record = read_run_record(record_file)
    if digest_of(record["identity"]) != record["identity_digest"]:  # edited by hand: it builds another model
        raise ConfigError(f"{record_file}: its identity is not the one its identity_digest records (edited?)")
    cfg = OmegaConf.create(_over(as_plain(compose_config([])), record["identity"]))
    try:
        validate(cfg)
    except ConfigError as error:
        raise ConfigError(f"{record_file}: the recorded config is refused: {error}") from None
    OmegaConf.set_struct(cfg, True)  # as composed: reading a key that does not exist is an error
    return cfg, record


def check_forced_expert(cfg: DictConfig, name: str, expert: int | None) -> None:
    """Raise ConfigError unless ``expert`` is None or an expert of the run's model (whether its routers can be
    forced is :func:`check_routing_switch`'s)."""
    from gemlab.engine.config import ConfigError
    from gemlab.engine.model import uses_experts

    if expert is None:
        return
    if not uses_experts(cfg):
        raise ConfigError(f"--force-expert {expert}: run {name}'s model has no experts")
    if not 0 <= expert < cfg.moe.num_experts:
        raise ConfigError(f"--force-expert {expert}: run {name} has experts 0..{cfg.moe.num_experts - 1}")


def check_routing_switch(model, cfg: DictConfig, name: str, expert: int | None, shared_only: bool) -> None:
    """Raise ConfigError when ``model``'s routers cannot be forced to ``expert`` (not None) or have no shared
    expert to use alone (``shared_only``), naming the run and its router."""
    from gemlab.engine.config import ConfigError
    from gemlab.engine.cross_expert import can_force, has_shared_expert_only

    if expert is not None and not can_force(model):
        raise ConfigError(
            f"--force-expert {expert}: run {name}'s router {cfg.router.name} has no domain -> expert table "
            "nor other routing to force (expert-parallel routers, and MoGE's, can be forced)"
        )
    if shared_only and not has_shared_expert_only(model):
        raise ConfigError(
            f"--shared-expert-only: run {name}'s router {cfg.router.name} has no shared expert to use alone "
            "(MoGE's has one unless router.shared_expert=false)"
        )


def _check_split(mixture, split: str) -> None:
    """Raise ConfigError naming the first domain without ``split``, or with no images in it."""
    from gemlab.engine.config import ConfigError

    for domain in mixture.domains:
        if split not in domain.splits:
            raise ConfigError(
                f"--split {split}: domain {domain.name!r} has no such split (it has {sorted(domain.splits)})"
            )
        if not domain.splits[split]:
            raise ConfigError(f"--split {split}: domain {domain.name!r} has no images in it")


def _run_plan(cfg: DictConfig, run_dir: Location, record: dict[str, Any]):
    """The run's ``plan.json`` (None for a run without a plan).

    Raises ConfigError when it is missing or is not the plan ``run.json`` records, PlanInputError when it
    is not a plan.
    """
    from gemlab.engine.config import ConfigError
    from gemlab.engine.model import needs_plan
    from gemlab.engine.prepare import PLAN_FILE, RUN_FILE, plan_fingerprint, read_plan

    plan_file = run_dir / PLAN_FILE
    plan = read_plan(plan_file) if plan_file.is_file() else None
    if plan is None and needs_plan(cfg):
        raise ConfigError(f"{plan_file}: missing; router {cfg.router.name} follows the plan the run was trained with")
    if plan_fingerprint(plan) != record["plan_fingerprint"]:
        raise ConfigError(f"{plan_file}: not the plan {run_dir / RUN_FILE} records; the experts would not fit it")
    return plan


def _newest_checkpoint(run_dir: Location) -> Location:
    """The newest verified checkpoint, a warning on stderr per newer damaged one; raises ConfigError without one."""
    from gemlab.engine.config import ConfigError
    from gemlab.engine.resume import NoUsableCheckpoint, find_resume_point

    resume = find_resume_point(run_dir)
    if resume.folder is None and resume.skipped:
        listed = "; ".join(resume.skipped)
        raise NoUsableCheckpoint(f"{run_dir}: no checkpoint verifies, so there is nothing to evaluate: {listed}")
    if resume.folder is None:
        raise ConfigError(f"{run_dir}: no checkpoint to evaluate (gemlab train saves one every trainer.eval_interval)")
    for problem in resume.skipped:
        print(f"gemlab eval: warning: damaged checkpoint skipped: {problem}", file=sys.stderr)
    return resume.folder


def evaluate_run(
    run_dir: Location,
    cfg: DictConfig,
    record: dict[str, Any],
    split: str,
    expert: int | None = None,
    batch_size: int | None = None,
    shared_only: bool = False,
) -> Evaluation:
    """``run_dir``'s newest verified checkpoint, every expert loaded, evaluated on ``split`` of every domain.

    ``cfg`` and ``record``: from :func:`run_config`. ``expert``: every MoE layer sends every domain there;
    ``shared_only``: every MoE layer uses its shared expert alone (MoGE-SE; not with ``expert``).
    Raises ValueError for both ``expert`` and ``shared_only``; ConfigError (CheckpointMismatch,
    CheckpointDamaged, NoUsableCheckpoint among them) naming the run, file, split or expert, or a router
    that cannot be switched so; DataError for unreadable data; OSError when the storage cannot be read.
    """
    from gemlab.data.errors import DataError
    from gemlab.engine.checkpoint import CheckpointMismatch, read_checkpoint
    from gemlab.engine.config import ConfigError, as_plain
    from gemlab.engine.cross_expert import forced_expert, shared_expert_only
    from gemlab.engine.data import build_mixture
    from gemlab.engine.model import build_model, checkpointed_experts
    from gemlab.engine.tasks import task_of

    if expert is not None and shared_only:
        raise ValueError("evaluate_run: force an expert or use the shared expert alone, not both")
    check_forced_expert(cfg, run_dir.name, expert)
    try:
        mixture = build_mixture(cfg.data, cfg.seed, generate=False)
    except DataError as error:
        raise ConfigError(f"data: {error}") from None
    _check_split(mixture, split)
    plan = _run_plan(cfg, run_dir, record)
    model = build_model(as_plain(cfg), mixture, plan)
    check_routing_switch(model, cfg, run_dir.name, expert, shared_only)
    checkpoint = _newest_checkpoint(run_dir)
    expected = {
        "plan_fingerprint": record["plan_fingerprint"],
        "num_experts": checkpointed_experts(cfg),
        "identity_digest": record["identity_digest"],  # the checkpoint's: keys added since change a recomputed one
    }
    with checkpoint.local_copy() as folder:
        try:
            step, _ = read_checkpoint(folder, model, None, expected)
        except RuntimeError as error:  # load_state_dict: the model this code builds has other weights
            first = str(error).strip().splitlines()[0]
            raise CheckpointMismatch(f"{checkpoint}: does not fit the model built for the run ({first})") from None
    task = task_of(mixture, cfg.objective)
    data = task.data(mixture, cfg.data.image_size)
    domains, batch_size = range(len(mixture.domains)), batch_size or cfg.trainer.eval_batch_size
    if expert is not None:
        switch = forced_expert(model, expert)
    else:
        switch = shared_expert_only(model) if shared_only else nullcontext(model)
    with switch:
        results = task.evaluate(model, data, domains, split, batch_size)
    by_name = {mixture.names[d]: result for d, result in results.items()}
    return Evaluation(run_dir.name, checkpoint.name, step, split, expert, shared_only, task.metric, by_name)


def evaluation_table(cfg: DictConfig, evaluation: Evaluation) -> pa.Table:
    """The long-form table (``results.parquet``'s columns): every scalar metric and ``expert_load/<j>`` per
    domain, and each scalar's mean under the ``all`` domain, at the checkpoint's step. Raises nothing."""
    import pyarrow as pa

    from gemlab.engine.outputs import domain_metrics, key_fields
    from gemlab.results_schema import arrow_schema

    fields = key_fields(cfg, evaluation.name)
    rows = [
        {**fields, "domain": d, "metric": m, "step": evaluation.step, "value": float(v)}
        for d, m, v in domain_metrics(evaluation.domains)
    ]
    return pa.Table.from_pylist(rows, schema=arrow_schema())


def markdown_table(evaluation: Evaluation) -> str:
    """One row per domain with each scalar metric, their means, and the run-level metrics (worst-group
    accuracy) below the table; raises nothing."""
    metrics, means = evaluation.scalar_metrics(), evaluation.means()
    lines = ["| domain | " + " | ".join(metrics) + " |", "|---|" + "---:|" * len(metrics)]
    for domain, result in evaluation.domains.items():
        lines.append(f"| {domain} | " + " | ".join(f"{result[m]:.4f}" for m in metrics) + " |")
    lines.append("| **mean** | " + " | ".join(f"{means[m]:.4f}" for m in metrics) + " |")
    lines += [f"\n{metric}: {value:.4f}" for metric, value in means.items() if metric not in metrics]
    return "\n".join(lines)


def _destination(out: str | None, run_dir: Location, split: str, expert: int | None, shared_only: bool) -> Location:
    """``--out``, or the default file in the run folder, checked writable without creating anything.

    Raises StorageError for a URI pyarrow cannot open, OSError naming the file when it cannot be written.
    """
    from gemlab.files import check_file_destination
    from gemlab.storage import Location

    suffix = "-shared" if shared_only else "" if expert is None else f"-expert{expert}"
    path = Location.parse(out) if out is not None else run_dir / f"eval-{split}{suffix}.parquet"
    if path.is_local:
        check_file_destination(path.local_path)
    else:
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, "is a folder; give a file name", str(path))
        path.parent.check_creatable()
    return path


def run(args: argparse.Namespace) -> int:
    from gemlab.engine.config import ConfigError
    from gemlab.engine.model import method_label
    from gemlab.engine.outputs import write_table
    from gemlab.storage import Location

    run_dir = Location.parse(args.run_dir)  # ``args.run`` is the command's function
    cfg, record = run_config(run_dir)
    split = args.split if args.split is not None else cfg.data.eval_split
    if not re.fullmatch(r"[A-Za-z0-9_-]+", split):  # it names the default output file
        raise ConfigError(f"--split {split!r}: not a split name (letters, digits, - and _)")
    if args.force_expert is not None and args.shared_expert_only:
        raise ConfigError("--force-expert and --shared-expert-only: choose one")
    out = _destination(args.out, run_dir, split, args.force_expert, args.shared_expert_only)  # before the data are read
    evaluation = evaluate_run(
        run_dir, cfg, record, split, args.force_expert, args.batch_size, shared_only=args.shared_expert_only
    )
    routing = "routed as trained" if evaluation.expert is None else f"every domain through expert {evaluation.expert}"
    if evaluation.shared_only:
        routing = "the shared expert alone (MoGE-SE)"
    print(
        f"[{method_label(cfg)}] {evaluation.name}: step {evaluation.step} ({evaluation.checkpoint}), "
        f"{split} split, {routing}"
    )
    print(markdown_table(evaluation))
    write_table(evaluation_table(cfg, evaluation), out)
    print(f"\nwrote {out}")
    return 0
