"""The classification metrics every method reports: macro-F1, shot-group accuracy, worst-group accuracy,
their rows in results.parquet, and `gemlab report --select` with the summary columns."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from gemlab.cli import main
from gemlab.engine.outputs import domain_metrics
from gemlab.evaluation.classification import FEW_SHOT_BELOW, MANY_SHOT_ABOVE, AccuracyEvaluator, shot_groups
from gemlab.report.results import ReportError, check_selection, load_results, selected
from gemlab.report.tables import per_domain_table, to_markdown
from report_rows import run_rows


def _logits_predicting(predicted: list[int], classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(predicted), classes).float() * 5


def _macro_f1_transcribed(labels: list[int], predicted: list[int]) -> float:
    """WILDS' F1-macro written out: F1_c = 2 TP / (2 TP + FP + FN), averaged over the classes in the labels."""
    scores = []
    for c in sorted(set(labels)):
        tp = sum(y == c and p == c for y, p in zip(labels, predicted, strict=True))
        fp = sum(y != c and p == c for y, p in zip(labels, predicted, strict=True))
        fn = sum(y == c and p != c for y, p in zip(labels, predicted, strict=True))
        scores.append(2 * tp / (2 * tp + fp + fn))
    return sum(scores) / len(scores)


def test_macro_f1_against_its_transcription_over_several_batches():
    labels = [0, 0, 1, 1, 1, 2, 2, 0, 1, 2]
    predicted = [0, 1, 1, 1, 3, 2, 0, 0, 2, 2]  # class 3 is only predicted, never true: no term of its own
    evaluator = AccuracyEvaluator()
    for part in (slice(0, 4), slice(4, 10)):
        evaluator.process(torch.tensor(labels[part]), _logits_predicting(predicted[part], 4))
    result = evaluator.evaluate()
    assert result["macro_f1"] == pytest.approx(_macro_f1_transcribed(labels, predicted), rel=1e-12)
    assert result["accuracy"] == pytest.approx(6 / 10)
    assert set(result) == {"accuracy", "loss", "macro_f1"}  # no class counts: no shot groups


def test_shot_groups_follow_the_named_thresholds():
    counts = [MANY_SHOT_ABOVE + 1, MANY_SHOT_ABOVE, FEW_SHOT_BELOW, FEW_SHOT_BELOW - 1, 0]
    assert shot_groups(counts) == {
        "many_shot_accuracy": [0],
        "medium_shot_accuracy": [1, 2],
        "few_shot_accuracy": [3, 4],
    }


def test_shot_accuracy_is_the_mean_per_class_accuracy_of_the_tested_classes():
    counts = [500, 300, 50, 5, 3]  # many: 0, 1; medium: 2; few: 3, 4
    labels = [0, 0, 0, 0, 1, 2, 2, 3]  # class 4 has no test sample: skipped
    predicted = [0, 0, 0, 1, 1, 0, 0, 3]
    evaluator = AccuracyEvaluator(counts)
    evaluator.process(torch.tensor(labels), _logits_predicting(predicted, 5))
    result = evaluator.evaluate()
    assert result["many_shot_accuracy"] == pytest.approx((3 / 4 + 1 / 1) / 2)  # per class, then the mean
    assert result["medium_shot_accuracy"] == 0.0
    assert result["few_shot_accuracy"] == 1.0
    only_many = AccuracyEvaluator(counts)
    only_many.process(torch.tensor([0, 1]), _logits_predicting([0, 0], 5))
    assert math.isnan(only_many.evaluate()["few_shot_accuracy"])  # an empty group is NaN
    empty = AccuracyEvaluator(counts).evaluate()
    assert all(math.isnan(v) for v in empty.values()) and len(empty) == 6


def test_the_evaluator_refuses_what_does_not_fit():
    with pytest.raises(ValueError, match="2 class counts for logits of 3"):
        AccuracyEvaluator([1, 2]).process(torch.tensor([0]), torch.zeros(1, 3))
    evaluator = AccuracyEvaluator()
    evaluator.process(torch.tensor([0]), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="logits of 4 classes after batches of 3"):
        evaluator.process(torch.tensor([0]), torch.zeros(1, 4))


def test_domain_metrics_add_worst_group_and_shot_means_over_the_domains_that_have_them():
    nan = float("nan")
    domains = {
        "a": {"accuracy": 0.9, "macro_f1": 0.8, "few_shot_accuracy": nan, "expert_load": [1.0]},
        "b": {"accuracy": 0.6, "macro_f1": 0.5, "few_shot_accuracy": 0.4, "expert_load": [1.0]},
    }
    run_level = {m: v for d, m, v in domain_metrics(domains) if d == "all"}
    assert run_level["worst_group_accuracy"] == 0.6
    assert run_level["macro_f1"] == pytest.approx(0.65)
    assert run_level["few_shot_accuracy"] == 0.4  # domain a has no few-shot test class
    domains["a"]["accuracy"] = nan
    assert math.isnan({m: v for d, m, v in domain_metrics(domains) if d == "all"}["worst_group_accuracy"])


# ---------------------------------------------------------------------------------------- report
def _with_run_level(rows: list[dict], worst: float, f1: float) -> list[dict]:
    """``rows`` of one run plus its all-domain worst-group accuracy and macro-F1 at each step."""
    extra = []
    for step in {r["step"] for r in rows}:
        template = next(r for r in rows if r["step"] == step and r["domain"] == "all")
        extra += [{**template, "metric": m, "value": v} for m, v in (("worst_group_accuracy", worst), ("macro_f1", f1))]
    return rows + extra


@pytest.fixture
def moge_results(tmp_path: Path) -> Path:
    rows = [  # candidate λ=0.0 has the better mean accuracy, candidate λ=0.1 the better worst group
        *_with_run_level(run_rows("a0", "metadata", None, 0, [0.95, 0.45], balance=0.0), 0.45, 0.7),
        *_with_run_level(run_rows("a1", "metadata", None, 1, [0.93, 0.47], balance=0.0), 0.47, 0.7),
        *_with_run_level(run_rows("b0", "metadata", None, 0, [0.70, 0.60], balance=0.1), 0.60, 0.6),
        *_with_run_level(run_rows("b1", "metadata", None, 1, [0.72, 0.62], balance=0.1), 0.62, 0.6),
    ]
    path = tmp_path / "results.parquet"
    pd.DataFrame(rows).to_parquet(path)
    return path


def test_selection_by_worst_group_accuracy_picks_another_candidate(moge_results):
    frame = load_results([moge_results])
    assert sorted(set(selected(frame)["run"])) == ["a0", "a1"]
    assert sorted(set(selected(frame, "worst_group_accuracy")["run"])) == ["b0", "b1"]
    table = per_domain_table(frame, select="worst_group_accuracy")
    assert table.columns == ["big", "small", "Avg.", "worst group", "macro-F1"]
    rows = dict(table.rows)
    assert rows["metadata"]["worst group"] == pytest.approx((0.61, 0.01, 2))
    assert "selected by worst_group_accuracy" in table.title
    assert "| metadata | 71.0 ± 1.0 | 61.0 ± 1.0 | 66.0 ± 1.0 | 61.0 ± 1.0 | 60.0 ± 0.0 |" in to_markdown(table)


def test_the_report_command_selects_by_worst_group_and_refuses_other_metrics(moge_results, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["report", str(moge_results), "--out", str(out), "--select", "worst_group_accuracy"]) == 0
    assert "| worst group | macro-F1 |" in (out / "per_domain.md").read_text()
    capsys.readouterr()
    frame = load_results([moge_results])
    with pytest.raises(ReportError, match="--select loss: runs are selected by one of"):
        check_selection(frame, "loss")
    with pytest.raises(ReportError, match="no finite 'all'-domain ap"):
        check_selection(frame, "ap")
    assert main(["report", str(moge_results), "--out", str(tmp_path / "refused"), "--select", "loss"]) == 2
    assert not (tmp_path / "refused").exists()
