"""What several test files build the same way: the tiny experiments on the session's generated data.

Kept in one place so that a change to the tiny experiment's overrides (or
to how a run is prepared) is made once for every test that trains on it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from gemlab.engine.config import compose_config
from gemlab.engine.prepare import Prepared, prepare


def tiny_overrides(digits_dir: Path, storage: Path | str, *overrides: str) -> list[str]:
    """Hydra overrides of the tiny experiment on ``digits_dir``, storing under ``storage``; raises nothing."""
    return ["experiment=tiny", f"data.path={digits_dir}", f"storage_path={storage}", *overrides]


def tiny_config(digits_dir: Path, storage: Path | str, *overrides: str) -> DictConfig:
    """The tiny experiment's composed config; raises ConfigError for a bad override."""
    return compose_config(tiny_overrides(digits_dir, storage, *overrides))


def tiny_detection_overrides(synth_dir: Path, storage: Path | str, *overrides: str) -> list[str]:
    """Hydra overrides of the tiny detection experiment on the session's synth-uodb; raises nothing."""
    return [
        "experiment=uodb_tiny",
        "data.source=collection",
        f"data.path={synth_dir}",
        f"storage_path={storage}",
        *overrides,
    ]


def tiny(digits_dir: Path, storage: Path | str, *overrides: str) -> Prepared:
    """The tiny experiment, prepared (data read, plan solved, run folder written); raises ConfigError."""
    return prepare(tiny_config(digits_dir, storage, *overrides))


def evaluation_record(step: int, accuracy: float) -> dict:
    """One evaluation as rank 0 records it: two digit domains (``invert`` at half the accuracy), two experts.

    Raises nothing.
    """
    return {
        "step": step,
        "metric": "accuracy",
        "domains": {
            "rot0": {"accuracy": accuracy, "loss": 0.5, "expert_load": [1.0, 0.0]},
            "invert": {"accuracy": accuracy / 2, "loss": 1.5, "expert_load": [0.25, 0.75]},
        },
        "train": {"loss": 0.7, "aux/balance": 0.01},
        "samples_per_s": 1234.0,
        "cpu_ms_per_sample": 0.9,
        "allreduce_bytes_per_step": 4096,
    }


class RoundRobinPlan:
    """The fields a router reads from a plan: task t on expert t mod E, also as a one-hot LP plan; raises nothing."""

    def __init__(self, tasks: int, num_experts: int) -> None:
        self.num_experts, self.assignment = num_experts, np.arange(tasks) % num_experts
        self.fractional = np.eye(num_experts)[self.assignment]


def giou_written_out(a, b) -> float:
    """Generalised IoU of two cxcywh boxes, written out (Rezatofighi et al., 2019); raises nothing."""
    ax1, ay1, ax2, ay2 = a[0] - a[2] / 2, a[1] - a[3] / 2, a[0] + a[2] / 2, a[1] + a[3] / 2
    bx1, by1, bx2, by2 = b[0] - b[2] / 2, b[1] - b[3] / 2, b[0] + b[2] / 2, b[1] + b[3] / 2
    inter = max(0.0, min(ax2, bx2) - max(ax1, bx1)) * max(0.0, min(ay2, by2) - max(ay1, by1))
    union = a[2] * a[3] + b[2] * b[3] - inter
    hull = (max(ax2, bx2) - min(ax1, bx1)) * (max(ay2, by2) - min(ay1, by1))
    return inter / union - (hull - union) / hull


def moge_layer(dim: int, **options):
    """A seeded MoGE layer -- metadata router (4 experts, k=2), experts and a shared expert -- and its router."""
    import torch

    from gemlab.moe.experts import Experts
    from gemlab.moe.layer import MoELayer
    from gemlab.moe.routers.metadata import MetadataRouter

    torch.manual_seed(0)
    router = MetadataRouter(dim, 4, k=2, **options)
    experts = Experts(4, dim, 16)
    shared = torch.nn.Sequential(torch.nn.Linear(dim, dim), torch.nn.GELU())
    return router, MoELayer(router=router, experts=experts, shared_expert=shared)
