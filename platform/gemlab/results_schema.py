"""The results table's schema, in one place: its file name, its columns and their types, its metric names.

Every run and every sweep writes one long-form ``results.parquet`` -- one
row per run x domain x metric x step, the config's key fields as columns --
and ``gemlab report`` reads any number of them back as one frame. The
writer (:mod:`gemlab.engine.outputs`), the sweep's table
(:mod:`gemlab.tune.results`), the reader (:mod:`gemlab.report.results`) and
the benchmarks all take the names from here, so that the two sides cannot
drift apart. Importing this module loads neither torch nor Ray, and pyarrow
only when a table is built.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import pyarrow as pa

RESULTS_FILE = "results.parquet"
ALL_DOMAINS = "all"  # the domain column of run-level metrics (mean task metric, training losses, speed)

# Metrics of each domain, and (under ALL_DOMAINS) their mean over domains: a classification run's accuracy
# and loss; a detection run's COCO AP (ap, ap50, ap75, ap_small, ap_medium, ap_large; NaN where COCO has
# nothing to measure, such as a domain without large objects).
ACCURACY, LOSS = "accuracy", "loss"
AP = "ap"
# STAR's (objective=star, self-supervised): a linear probe's accuracy on the frozen trunk, and the mean canonical
# correlation of the invariant and equivariant embeddings (their redundancy: lower is less).
PROBE_ACCURACY, CCA = "probe_accuracy", "cca"
# Each task's metric, the one runs are selected by: every run's table holds exactly one of them under ALL_DOMAINS.
TASK_METRICS = MappingProxyType({"classification": ACCURACY, "detection": AP, "star": PROBE_ACCURACY})
# Classification's other metrics (gemlab.evaluation.classification): each domain's macro-F1 and the accuracy of
# its many-, medium- and few-shot classes (NaN for a group without a tested class), with their means over domains
# under ALL_DOMAINS (a shot group's over the domains where it is not NaN); and, under ALL_DOMAINS only, the
# worst-group accuracy: the lowest domain accuracy.
MACRO_F1, WORST_GROUP_ACCURACY = "macro_f1", "worst_group_accuracy"
MANY_SHOT_ACCURACY, MEDIUM_SHOT_ACCURACY, FEW_SHOT_ACCURACY = (
    "many_shot_accuracy",
    "medium_shot_accuracy",
    "few_shot_accuracy",
)
SHOT_METRICS = (MANY_SHOT_ACCURACY, MEDIUM_SHOT_ACCURACY, FEW_SHOT_ACCURACY)
# What `gemlab report --select` may select runs by (each the higher the better), beside the task metrics.
SELECTION_METRICS = (*TASK_METRICS.values(), WORST_GROUP_ACCURACY, MACRO_F1)
# The columns a report's per-domain table adds after its domains where the results hold them: label -> the
# metric's ALL_DOMAINS value.
SUMMARY_COLUMNS = MappingProxyType(
    {
        "worst group": WORST_GROUP_ACCURACY,
        "macro-F1": MACRO_F1,
        "many": MANY_SHOT_ACCURACY,
        "medium": MEDIUM_SHOT_ACCURACY,
        "few": FEW_SHOT_ACCURACY,
        "CCA": CCA,
    }
)
# Per-expert families, one metric per expert j: ``expert_load/<j>`` is the share of a domain's tokens routed
# to expert j, ``cross_expert/<j>`` a domain's score in the task metric when every token is sent to expert j.
EXPERT_LOAD, CROSS_EXPERT = "expert_load", "cross_expert"
EXPERT_METRIC = re.compile(rf"(?P<family>{EXPERT_LOAD}|{CROSS_EXPERT})/(?P<expert>\d+)")
# Run-level metrics under ALL_DOMAINS: each training statistic as ``train/<key>``, and the speed of training.
TRAIN_PREFIX = "train/"
SAMPLES_PER_S, CPU_MS_PER_SAMPLE, ALLREDUCE_BYTES_PER_STEP = (
    "samples_per_s",
    "cpu_ms_per_sample",
    "allreduce_bytes_per_step",
)

# The model's parameter counts (gemlab.engine.parameters), run-level rows under ALL_DOMAINS at a run's last
# evaluated step: every parameter, the experts' (every routed expert of every layer), those one token passes
# through, and the experts' hidden width (absent for a model without MoE layers). Keyed by the name run.json's
# ``parameters`` gives each count.
PARAMS_TOTAL, PARAMS_EXPERTS, PARAMS_ACTIVE, EXPERT_HIDDEN = (
    "params_total",
    "params_experts",
    "params_active",
    "expert_hidden",
)
PARAMETER_METRICS = MappingProxyType(
    {"total": PARAMS_TOTAL, "experts": PARAMS_EXPERTS, "active": PARAMS_ACTIVE, "expert_hidden": EXPERT_HIDDEN}
)

# Run-level rows of the plan a run trained by (GEM Table VI's columns): its value Σ c_ij, value / LP bound, the
# load above capacity summed over experts as a share of the total capacity, and the number of overloaded experts.
PLAN_VALUE, PLAN_LP_RATIO, CAPACITY_OVERLOAD, OVERLOADED_EXPERTS = (
    "plan_value",
    "plan_lp_ratio",
    "capacity_overload",
    "overloaded_experts",
)
PLAN_METRICS = MappingProxyType(
    {
        "plan value": PLAN_VALUE,
        "value / LP": PLAN_LP_RATIO,
        "capacity overload": CAPACITY_OVERLOAD,
        "overloaded experts": OVERLOADED_EXPERTS,
    }
)

# A sweep's table adds these columns to its trials' rows: the sweep, the trial, and one per swept key.
SWEEP_COLUMN, TRIAL_COLUMN, PARAM_PREFIX = "sweep", "trial", "param:"

ColumnKind = Literal["text", "integer", "number"]
_ARROW_TYPES = {"text": "string", "integer": "int64", "number": "float64"}


@dataclass(frozen=True)
class Column:
    """One column: its name, its kind, and what a reader of results accepts in it.

    ``missing_allowed``: a reader accepts null (None, NaN) there. ``read``: ``gemlab report`` reads the
    column, so it refuses a table without it and checks its values; the others are written for people.
    """

    name: str
    kind: ColumnKind
    missing_allowed: bool
    read: bool = True

    @property
    def whole(self) -> bool:
        """Whether the column holds whole numbers only (steps, seeds, counts)."""
        return self.kind == "integer"


# Every run's columns, in the order they are written.
COLUMNS: tuple[Column, ...] = (
    Column("run", "text", missing_allowed=False),
    Column("tag", "text", missing_allowed=False, read=False),
    Column("router", "text", missing_allowed=False),
    Column("strategy", "text", missing_allowed=True),  # the planner's strategy, for routers that follow a plan
    Column("precision", "integer", missing_allowed=True),  # GEM's rounding precision, for its own strategy
    Column("num_experts", "integer", missing_allowed=True),
    Column("seed", "integer", missing_allowed=False),
    Column("domain", "text", missing_allowed=False),
    Column("metric", "text", missing_allowed=False),
    Column("step", "integer", missing_allowed=False),
    Column("value", "number", missing_allowed=True),
)


def param_column(key: str) -> str:
    """A sweep's column of one swept key (``param:trainer.lr``); raises nothing."""
    return f"{PARAM_PREFIX}{key}"


# A sweep over ``seed`` holds each trial's seed here too; a reader takes it as the run's seed.
SWEPT_SEED = Column(param_column("seed"), "integer", missing_allowed=True)

# A sweep's named variants (``sweep.variants``, gemlab.tune.variants): the label a trial was swept under, which a
# report names the method by (Mixed-DINO, GEMGR-DINO: models no router name tells apart).
VARIANT_KEY = "variant"
SWEPT_VARIANT = Column(param_column(VARIANT_KEY), "text", missing_allowed=True)

# A sweep over ``data.domains`` whose every value is one domain trains one model per domain (Single-DINO): a
# report reads a seed's runs of one method together, as one result (gemlab.report.per_domain_models).
SWEPT_DOMAINS = param_column("data.domains")


def expert_metric(family: str, expert: int) -> str:
    """The metric of ``family`` (EXPERT_LOAD or CROSS_EXPERT) for one expert: ``expert_load/3``; raises nothing."""
    return f"{family}/{expert}"


def train_metric(key: str) -> str:
    """The metric of one training statistic (``train/loss``, ``train/aux/balance``); raises nothing."""
    return f"{TRAIN_PREFIX}{key}"


# Leave-one-domain-out (``data.holdout``): the held-out domain's task metric again, under its own name and
# that domain's (``heldout_accuracy``; ``heldout_ap``), so a report finds it without knowing the config.
HELDOUT_PREFIX = "heldout_"


def heldout_metric(task_metric: str) -> str:
    """The held-out domain's metric of a task metric: ``heldout_accuracy``; raises nothing."""
    return f"{HELDOUT_PREFIX}{task_metric}"


# A run that adapts a trained parent to added domains (adapt.parent): each added domain's task metric as its
# ``adaptability``, each old domain's drop from the parent's last score as its ``forgetting`` (positive: worse),
# and each one's mean under ALL_DOMAINS (gemlab.engine.forgetting).
ADAPTABILITY, FORGETTING = "adaptability", "forgetting"


def arrow_schema() -> pa.Schema:
    """The Arrow schema of a run's table (every column nullable, as Arrow's default); raises nothing."""
    import pyarrow as pa

    return pa.schema([(column.name, getattr(pa, _ARROW_TYPES[column.kind])()) for column in COLUMNS])
