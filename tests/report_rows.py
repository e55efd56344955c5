"""Results rows of constructed runs, in the long-form schema gemlab's runs write, for the report tests."""

from __future__ import annotations

import numpy as np

DOMAINS = ["big", "small"]


def run_rows(run, router, strategy, seed, accuracy, balance=None, loads=None, cross=None, domains=DOMAINS):
    """Rows of one run: an early evaluation (step 50, deliberately better) and the last one (step 100)."""
    rows = []
    for step, scale in ((50, 1.2), (100, 1.0)):
        values = {d: scale * a for d, a in zip(domains, accuracy, strict=True)}
        for domain, value in values.items():
            rows.append((domain, "accuracy", step, value))
            for j, share in enumerate((loads or {}).get(domain, [])):
                rows.append((domain, f"expert_load/{j}", step, share))
            for j, acc in enumerate((cross or {}).get(domain, [])):
                rows.append((domain, f"cross_expert/{j}", step, acc))
        rows.append(("all", "accuracy", step, float(np.mean(list(values.values())))))
    return [
        {
            "run": run, "tag": "t", "router": router, "strategy": strategy, "precision": 8 if strategy else None,
            "num_experts": 2, "seed": seed, "domain": d, "metric": m, "step": s, "value": v,
            "param:router.balance_weight": balance,
        }
        for d, m, s, v in rows
    ]  # fmt: skip
