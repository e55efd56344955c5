"""Adaptability and forgetting of an adapted run's evaluation (GEM, seed 000, Fig. 11).

A run that continues a trained parent on added domains (:mod:`gemlab.engine.adapt`)
is judged on two axes at each evaluation:

* **adaptability** of an added domain: its task metric now (accuracy, AP) --
  how well the model learnt what it had not seen;
* **forgetting** of an old domain: the parent's last score minus its score
  now -- what the continued training cost it. Positive is worse; a negative
  value is an old domain that improved.

Under ``all`` each is averaged over its domains. The parent's scores travel
with every evaluation record (``record["adaptation"]``), so the rows can be
rebuilt from any saved history, and a sweep's trials report them like the
driver does.
"""

from __future__ import annotations

from typing import Any

from gemlab.results_schema import ADAPTABILITY, ALL_DOMAINS, FORGETTING


def adaptation_metrics(record: dict[str, Any]) -> list[tuple[str, str, float]]:
    """(domain, metric, value) rows of one record: each added domain's adaptability, each old domain's
    forgetting, and their means under ``all``; none for a record of a run that adapts no parent.

    Raises KeyError for an adaptation record that names a domain the evaluation lacks.
    """
    adaptation = record.get("adaptation")
    if adaptation is None:
        return []
    metric, domains = record["metric"], record["domains"]
    adaptability = [(name, domains[name][metric]) for name in adaptation["added"]]
    forgetting = [(name, before - domains[name][metric]) for name, before in adaptation["parent_scores"].items()]
    rows = []
    for family, values in ((ADAPTABILITY, adaptability), (FORGETTING, forgetting)):
        rows += [(name, family, value) for name, value in values]
        if values:
            rows.append((ALL_DOMAINS, family, sum(value for _, value in values) / len(values)))
    return rows
