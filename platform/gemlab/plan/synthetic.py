"""Seeded synthetic planning instances, for the CLI, benchmarks and tests.

Tasks and experts are random unit vectors, affinity ``max(0, cos)`` -- the
shape of real affinities (cosine of features to anchors), without data.
"""

from __future__ import annotations

import numpy as np


def random_affinity(num_tasks: int, num_experts: int, seed: int, dim: int = 64) -> np.ndarray:
    """(N, E) costs max(0, cos(task_i, expert_j)) for seeded random unit vectors."""
    rng = np.random.default_rng(seed)
    tasks = rng.standard_normal((num_tasks, dim))
    experts = rng.standard_normal((num_experts, dim))
    tasks /= np.linalg.norm(tasks, axis=1, keepdims=True)
    experts /= np.linalg.norm(experts, axis=1, keepdims=True)
    return np.maximum(0.0, tasks @ experts.T)


def heavy_tailed_loads(num_tasks: int, seed: int, sigma: float = 1.0) -> np.ndarray:
    """Log-normal task loads (a few large datasets, many small ones), rounded to whole units."""
    rng = np.random.default_rng(seed)
    return np.maximum(1.0, np.round(100.0 * rng.lognormal(0.0, sigma, num_tasks)))


def load_capacity(loads: np.ndarray, num_experts: int, slack: float) -> float:
    """Per-expert capacity ``slack`` times the fair share, and never below the largest load."""
    return float(max(slack * loads.sum() / num_experts, loads.max()))
