"""Experts at a fixed parameter budget (``moe.param_budget``, GEM Fig. 11) and the parameter counts every run
records: the hidden widths against the formula, refusals by name, counts against a hand count, the rows of
``results.parquet`` and the report, and the shipped expert-count sweep through ``gemlab sweep``."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

from gemlab.cli import main
from gemlab.engine.api import write_run_results
from gemlab.engine.config import ConfigError, as_plain, compose_config
from gemlab.engine.model import build_model
from gemlab.engine.parameters import RECORD_KEY, count_parameters
from gemlab.engine.prepare import RUN_FILE, prepare
from gemlab.moe.experts import ExpertFFN
from gemlab.moe.registry import MoELayers, budget_hidden, ffn_parameters, router_spec
from gemlab.moe.spec import RunFacts
from gemlab.report.parameters import parameters_table
from gemlab.report.results import load_results
from gemlab.report.tables import to_markdown
from gemlab.results_schema import ALL_DOMAINS, PARAMETER_METRICS, PARAMS_EXPERTS
from helpers import evaluation_record, tiny, tiny_config, tiny_detection_overrides

DIM, HIDDEN = 32, 64  # the tiny experiment's ViT: dim 32, mlp_ratio 2, one MoE block of depth 2


def _size(module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("num_experts", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("budget", [4, 2.5])
def test_the_hidden_width_is_the_largest_that_keeps_the_experts_within_the_budget(num_experts, budget):
    width = budget_hidden(DIM, HIDDEN, num_experts, budget)
    allowed = budget * ffn_parameters(DIM, HIDDEN)
    assert num_experts * ffn_parameters(DIM, width) <= allowed < num_experts * ffn_parameters(DIM, width + 1)
    assert allowed - num_experts * ffn_parameters(DIM, width) < num_experts * (2 * DIM + 1)  # < 1 unit per expert
    layer = MoELayers(router_spec("topk"), RunFacts(num_experts=num_experts), param_budget=budget)(DIM, HIDDEN)
    assert layer.experts.hidden == width
    assert _size(layer.experts) == num_experts * ffn_parameters(DIM, width)


def test_fig_11_sizes_and_the_formula_of_one_expert():
    assert ffn_parameters(DIM, HIDDEN) == _size(ExpertFFN(DIM, HIDDEN)) == HIDDEN * (2 * DIM + 1) + DIM
    # budget 4: E=4 exactly the dense width; E=2 twice it (2048.5, the dense output bias shared out, rounded down)
    assert [budget_hidden(256, 1024, e, 4) for e in (2, 4, 8)] == [2048, 1024, 511]
    assert budget_hidden(DIM, HIDDEN, 3, 3) == HIDDEN
    no_budget = MoELayers(router_spec("topk"), RunFacts(num_experts=8))
    assert no_budget(DIM, HIDDEN).experts.hidden == HIDDEN


def test_a_budget_below_one_hidden_unit_per_expert_is_refused_by_name(digits_dir, tmp_path):
    with pytest.raises(ValueError, match=r"moe\.param_budget=0\.01: 8 experts .* less than one hidden unit each"):
        budget_hidden(DIM, HIDDEN, 8, 0.01)
    minimum = 8 * ffn_parameters(DIM, 1) / ffn_parameters(DIM, HIDDEN)  # 0.18511...: "at least 0.1852"
    with pytest.raises(ValueError, match=r"a budget of at least 0\.1852 gives them one"):
        budget_hidden(DIM, HIDDEN, 8, minimum * 0.999)
    assert budget_hidden(DIM, HIDDEN, 8, 0.1852) == 1
    run = tiny(digits_dir, tmp_path)
    cfg = tiny_config(digits_dir, tmp_path, "moe.param_budget=0.01")
    with pytest.raises(ConfigError, match=r"moe\.param_budget=0\.01: 2 experts .*at least 0\.0463 gives"):
        build_model(as_plain(cfg), run.mixture, run.plan)


@pytest.mark.parametrize("value", ["0", "-1", "true", "nan", "inf", "'four'"])
def test_a_budget_that_is_no_positive_number_is_refused_by_name(value):
    with pytest.raises(ConfigError, match=r"moe\.param_budget=.*expected null or a finite number > 0"):
        compose_config([f"moe.param_budget={value}"])


def test_a_budget_is_refused_where_it_would_size_nothing(digits_dir, synth_uodb_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"moe\.param_budget=2: router=confidence's experts are classifiers"):
        tiny(digits_dir, tmp_path, "router=confidence", "moe.param_budget=2")

    def detector(*overrides: str):
        return compose_config(tiny_detection_overrides(synth_uodb_dir, tmp_path, *overrides))

    for model in ("dino", "gemgr_dino"):  # dense; experts that own queries and heads
        run = prepare(detector(f"model={model}"))
        budgeted = as_plain(detector(f"model={model}", "moe.param_budget=2"))
        with pytest.raises(ConfigError, match=r"moe\.param_budget=2: model=dino holds no MoE FFN experts"):
            build_model(budgeted, run.mixture, run.plan)
    with pytest.raises(ConfigError, match=r"moe\.param_budget=2 and model\.expert_hidden=32: both set"):
        detector("moe.param_budget=2", "model.expert_hidden=32")


def _counted(digits_dir, tmp_path, *overrides):
    run = tiny(digits_dir, tmp_path, *overrides)
    model = build_model(as_plain(run.cfg), run.mixture, run.plan)
    return run, model, count_parameters(model, as_plain(run.cfg), run.mixture)


@pytest.mark.parametrize(
    ("overrides", "per_token"),
    [
        (["moe.num_experts=4"], 1),  # gem: a domain's tokens run its one expert
        (["moe.num_experts=4", "router=topk", "router.k=2", "router.capacity_factor=4"], 2),  # room for all
        (["moe.num_experts=4", "router=soft"], 4),  # Soft MoE's slots mix every expert into every token
    ],
)
def test_counts_of_a_budgeted_model_match_a_hand_count(digits_dir, tmp_path, overrides, per_token):
    *_, dense = _counted(digits_dir, tmp_path, *overrides)
    run, model, counts = _counted(digits_dir, tmp_path, *overrides, "moe.param_budget=2")
    width = budget_hidden(DIM, HIDDEN, 4, 2)
    expert = ffn_parameters(DIM, width)
    assert (counts.expert_hidden, counts.experts_per_token) == (width, (float(per_token),))
    assert counts.experts == 4 * expert and dense.experts == 4 * ffn_parameters(DIM, HIDDEN)
    assert counts.total == _size(model) and dense.total - counts.total == dense.experts - counts.experts
    assert counts.active == counts.total - counts.experts + per_token * expert
    assert run.parameters == counts.record()  # what prepare() recorded, in run.json too
    assert json.loads((run.run_dir / RUN_FILE).read_text())[RECORD_KEY] == counts.record()


def test_a_shared_expert_keeps_the_dense_width_and_counts_as_active(digits_dir, tmp_path):
    run, model, counts = _counted(digits_dir, tmp_path, "router=metadata", "moe.num_experts=4", "moe.param_budget=2")
    (layer,) = [m for m in model.modules() if hasattr(m, "shared_expert") and m.shared_expert is not None]
    assert _size(layer.shared_expert) == ffn_parameters(DIM, HIDDEN)
    assert counts.experts == 4 * ffn_parameters(DIM, budget_hidden(DIM, HIDDEN, 4, 2))
    expected = counts.total - counts.experts + counts.experts_per_token[0] * counts.experts / 4
    assert counts.experts_per_token == (run.cfg.router.k,) and counts.active == pytest.approx(expected)  # top-k


def test_classifier_experts_count_whole(digits_dir, tmp_path):
    """DQRoute fuses all its classifiers on every sample: no MoE layer, every expert active."""
    _, model, counts = _counted(digits_dir, tmp_path, "router=confidence")
    assert counts.experts_per_token == () and counts.expert_hidden is None
    assert 0 < counts.experts < counts.total == counts.active == _size(model)


def test_the_counts_are_rows_of_the_results_and_a_report_table(digits_dir, tmp_path):
    runs = [tiny(digits_dir, tmp_path / "runs", f"moe.num_experts={e}", "moe.param_budget=4") for e in (2, 4)]
    for run in runs:
        write_run_results(run, [evaluation_record(3, 0.5), evaluation_record(6, 0.6)])
    frame = load_results([str(tmp_path / "runs")])
    counts = frame[frame["metric"].isin(PARAMETER_METRICS.values())]
    assert set(counts["domain"]) == {ALL_DOMAINS} and set(counts["step"]) == {6}  # at the last evaluation
    for run in runs:
        mine = counts[counts["run"] == run.name].set_index("metric")["value"]
        assert {key: mine[metric] for key, metric in PARAMETER_METRICS.items()} == {
            key: run.parameters[key] for key in PARAMETER_METRICS
        }
    table = parameters_table(frame)
    assert [label for label, _ in table.rows] == ["gem num_experts=2", "gem num_experts=4"]
    text = to_markdown(table)
    assert f"| gem num_experts=4 | {runs[1].parameters['total']} | {4 * ffn_parameters(DIM, HIDDEN)} |" in text
    assert parameters_table(frame[~frame["metric"].isin(PARAMETER_METRICS.values())]) is None


@pytest.mark.ray
@pytest.mark.slow
def test_the_budget_study_keeps_the_experts_total_within_a_hidden_unit_per_expert(ray_session, digits_dir, tmp_path):
    """The shipped sweep, cut to one seed and two steps, through the real `gemlab sweep` path."""
    command = ["sweep", "sweep=study_budget", f"data.path={digits_dir}", f"storage_path={tmp_path}"]
    assert main([*command, "sweep.space.seed=[0]", "trainer.max_steps=2", "trainer.eval_interval=2"]) == 0
    (sweep_dir,) = (tmp_path / "sweeps").iterdir()
    table = pq.read_table(sweep_dir / "results.parquet").to_pandas()
    experts = table[table["metric"] == PARAMS_EXPERTS].set_index("num_experts")["value"]
    assert sorted(experts.index) == [2, 4, 8]
    budget = 4 * ffn_parameters(DIM, HIDDEN)  # one MoE layer of budget 4
    for num_experts, total in experts.items():
        assert budget - num_experts * (2 * DIM + 1) < total <= budget
        trial = table[table["num_experts"] == num_experts]["trial"].iloc[0]
        record = json.loads((sweep_dir / "trials" / trial / RUN_FILE).read_text())[RECORD_KEY]
        assert record["experts"] == total and len(record["experts_per_token"]) == 1
    assert experts.max() - experts.min() < 8 * (2 * DIM + 1)  # equal within one hidden unit per expert
    report = tmp_path / "report"
    assert main(["report", str(sweep_dir), "--out", str(report)]) == 0
    shown = pd.read_csv(report / "parameters.csv").query("column == 'experts'").set_index("method")["mean"]
    assert shown.to_dict() == {f"gem num_experts={e}": experts[e] for e in (2, 4, 8)}
