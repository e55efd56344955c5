"""`gemlab report`: tables from a constructed results file match hand-computed values; figures are written."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from gemlab.cli import main
from gemlab.plan.strategies import STRATEGIES
from gemlab.report.results import ReportError, load_results, selected
from gemlab.report.tables import (
    PAPER_STRATEGY_ORDER,
    ablation_table,
    per_domain_table,
    strategy_order,
    to_csv,
    to_latex,
    to_markdown,
)
from report_rows import run_rows


@pytest.fixture
def results_file(tmp_path: Path) -> Path:
    loads = {"big": [1.0, 0.0], "small": [0.0, 1.0]}
    rows = [
        *run_rows("g0", "gem", "gem", 0, [0.90, 0.60], loads=loads, cross={"big": [0.9, 0.3], "small": [0.2, 0.6]}),
        *run_rows("g1", "gem", "gem", 1, [0.80, 0.50], loads=loads),
        *run_rows("r0", "gem", "random", 0, [0.70, 0.20]),
        *run_rows("t0", "topk", None, 0, [0.95, 0.30], balance=0.0),
        *run_rows("t1", "topk", None, 1, [0.85, 0.20], balance=0.0),
        *run_rows("t2", "topk", None, 0, [0.90, 0.40], balance=0.1),  # the better candidate: mean 0.65 vs 0.575
        *run_rows("t3", "topk", None, 1, [0.90, 0.40], balance=0.1),
    ]
    path = tmp_path / "results.parquet"
    pd.DataFrame(rows).to_parquet(path)
    return path


def test_selection_picks_each_methods_best_candidate_at_its_last_evaluation(results_file):
    picked = selected(load_results([results_file]))
    assert set(picked["step"]) == {100}
    assert sorted(set(picked["run"])) == ["g0", "g1", "r0", "t2", "t3"]


def test_per_domain_table_values(results_file):
    table = per_domain_table(load_results([results_file]))
    assert table.columns == ["big", "small", "Avg."]
    rows = dict(table.rows)
    assert list(rows) == ["gem", "gem:random", "topk"]
    mean, std, seeds = rows["gem"]["small"]
    assert (mean, std, seeds) == pytest.approx((0.55, 0.05, 2))
    assert rows["gem"]["Avg."][:2] == pytest.approx((0.7, 0.05))
    assert rows["topk"]["big"] == pytest.approx((0.9, 0.0, 2))
    markdown = to_markdown(table)
    assert "| gem | 85.0 ± 5.0 | 55.0 ± 5.0 | 70.0 ± 5.0 |" in markdown
    assert "| gem:random | 70.0 | 20.0 | 45.0 |" in markdown
    assert r"gem:random & 70.0 & 20.0 & 45.0 \\" in to_latex(table)
    assert r"85.0 $\pm$ 5.0" in to_latex(table)
    assert "topk,small,0.4,0.0,2" in to_csv(table)


def test_ablation_table_orders_strategies_like_the_paper(results_file):
    table = ablation_table(load_results([results_file]))
    assert [label for label, _ in table.rows] == ["random", "gem"]
    assert dict(table.rows)["random"]["Avg."][0] == pytest.approx(0.45)


def test_every_strategy_gets_an_ablation_row_the_papers_in_its_order():
    assert set(PAPER_STRATEGY_ORDER) <= set(STRATEGIES)  # the paper's order names only registered strategies
    assert strategy_order(set(STRATEGIES)) == [
        *PAPER_STRATEGY_ORDER,
        *(s for s in STRATEGIES if s not in PAPER_STRATEGY_ORDER),
    ]
    assert strategy_order({"gem", "mine", "random", "another"}) == ["random", "gem", "another", "mine"]  # none dropped


def test_report_command_writes_tables_and_figures(results_file, tmp_path):
    out = tmp_path / "report"
    assert main(["report", str(results_file), "--out", str(out)]) == 0
    written = {p.name for p in out.iterdir()}
    assert {"per_domain.md", "per_domain.tex", "per_domain.csv", "ablation.md"} <= written
    assert {"heatmap-gem.png", "cross_expert-gem.png", "curve-router.balance_weight.png"} <= written
    assert all((out / name).read_bytes()[:4] == b"\x89PNG" for name in written if name.endswith(".png"))
    again = tmp_path / "again"
    assert main(["report", str(results_file.parent), "--out", str(again)]) == 0  # a folder: its results files
    assert (again / "per_domain.md").read_text() == (out / "per_domain.md").read_text()


def test_bad_results_inputs_are_named(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing.parquet"), "--out", str(tmp_path / "o")]) == 2
    assert "missing.parquet" in capsys.readouterr().err
    text = tmp_path / "results.parquet"
    text.write_text("not parquet")
    with pytest.raises(ReportError, match="not a readable results table"):
        load_results([text])
    pd.DataFrame({"x": [1]}).to_parquet(text)
    with pytest.raises(ReportError, match="missing columns"):
        load_results([text])
