"""Named variants in one sweep (tune/variants.py) and how a report reads them: the method is the variant's label,
a seed's one-domain runs are one model per domain (Single-DINO), every setting has its row, and each expert's
routing claims (GEM Fig. 8) follow their definition."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gemlab.engine.config import ConfigError, compose_config
from gemlab.report.claims import FPR, TPR, claims_table, expert_claims
from gemlab.report.figures import expert_claims_figure, routing_heatmaps
from gemlab.report.results import load_results
from gemlab.report.settings import settings_table
from gemlab.report.tables import per_domain_table
from gemlab.results_schema import PARAMS_ACTIVE, PARAMS_TOTAL
from gemlab.tune.space import override
from gemlab.tune.sweep import SweepSpec, trial_overrides
from gemlab.tune.variants import joined_links, variant_links, variants_from_block

VARIANTS = {"Mixed-DINO": {"model": "dino"}, "GEMGR-DINO": {"model": "gemgr_dino", "router": "gem"}}


def test_a_variant_label_reaches_the_config_through_its_overrides_only():
    space = {"variant": ["GEMGR-DINO", "Mixed-DINO"], "seed": [0, 1]}
    variants = variants_from_block(VARIANTS, space)
    trials = [{"variant": "GEMGR-DINO", "seed": 0}, {"variant": "Mixed-DINO", "seed": 1}, {"seed": 2}]
    links = variant_links(trials, variants)
    assert links == {0: ["model=gemgr_dino", "router=gem"], 1: ["model=dino"]}
    assert trial_overrides(["experiment=uodb_tiny"], trials[0], links[0]) == [
        "experiment=uodb_tiny", "seed=0", "model=gemgr_dino", "router=gem",
    ]  # fmt: skip
    cfg = compose_config(trial_overrides(["experiment=uodb_tiny"], trials[0], links[0]))
    assert (cfg.model.experts_in, cfg.router.name, cfg.seed) == ("queries", "gem", 0)
    assert joined_links({0: ["a"]}, {0: ["b"], 1: ["c"]}) == {0: ["a", "b"], 1: ["c"]}


def test_a_sweep_file_with_variants_composes_every_trial():
    spec = SweepSpec.from_config(compose_config(["sweep=study_table2"]))
    labels = spec.space["variant"]
    assert {"Mixed-DINO", "GEM-DINO", "GEMGR-DINO", "DINO-MoE"} <= set(labels)
    assert set(spec.variant_links()) == set(range(len(spec.trials())))


@pytest.mark.parametrize(
    ("block", "space", "message"),
    [
        (VARIANTS, {"seed": [0]}, r"sweep.variants: needs the labels listed in sweep.space.variant"),
        (None, {"variant": ["A"]}, r"sweep.space.variant: the labels \['A'\] need their overrides"),
        (VARIANTS, {"variant": ["Mixed-DINO", "Single"]}, r"\['Single'\] are not labels of sweep.variants"),
        ({"A": "model=dino"}, {"variant": ["A"]}, r"sweep.variants.A='model=dino': expected"),
        ({"A": {"router": "gem"}}, {"variant": ["A"], "router": ["gem"]}, r"sweep.variants.A: sets \['router'\]"),
        (["A"], {"variant": ["A"]}, r"sweep.variants=\['A'\]: expected"),
    ],
)
def test_malformed_variants_are_refused_by_key(block, space, message):
    with pytest.raises(ConfigError, match=message):
        variants_from_block(block, space)


def test_none_is_written_as_hydras_null():
    assert override("data.shots", None) == "data.shots=null"
    assert compose_config(["experiment=uodb_tiny", override("data.shots", None)]).data.shots is None


def _rows(run, variant, seed, scores, domains_param=None, params=(1000, 400), loads=None):
    """One run's rows at its last step: each domain's AP, its mean under all, parameter counts, routing shares."""
    rows = [(d, "ap", v) for d, v in scores.items()] + [("all", "ap", float(np.mean(list(scores.values()))))]
    rows += [("all", PARAMS_TOTAL, params[0]), ("all", PARAMS_ACTIVE, params[1])]
    rows += [(d, f"expert_load/{j}", share) for d, shares in (loads or {}).items() for j, share in enumerate(shares)]
    return [
        {"run": run, "tag": "t", "router": "gem" if variant != "Mixed-DINO" else "dense", "strategy": None,
         "precision": None, "num_experts": 2, "seed": seed, "domain": d, "metric": m, "step": 100, "value": v,
         "param:variant": variant, "param:seed": float(seed), "param:data.domains": domains_param}
        for d, m, v in rows
    ]  # fmt: skip


def _report(tmp_path, rows):
    path = tmp_path / "results.parquet"
    pd.DataFrame(rows).to_parquet(path)
    return load_results([path])


def test_variants_are_the_methods_and_one_domain_runs_read_as_one_model_per_domain(tmp_path):
    rows = []
    for seed, (a, b) in enumerate(((0.2, 0.4), (0.3, 0.7))):
        rows += _rows(f"gem{seed}", "GEM-DINO", seed, {"photo": a + 0.1, "aerial": b + 0.1})
        rows += _rows(f"gemgr{seed}", "GEMGR-DINO", seed, {"photo": a, "aerial": b})
        rows += _rows(f"p{seed}", "Single-DINO", seed, {"photo": a}, "['photo']", params=(700, 700))
        rows += _rows(f"a{seed}", "Single-DINO", seed, {"aerial": b}, "['aerial']", params=(700, 700))
    frame = _report(tmp_path, rows)
    table = dict(per_domain_table(frame).rows)
    assert set(table) == {"GEM-DINO", "GEMGR-DINO", "Single-DINO"}  # two methods recording router gem, apart
    single = table["Single-DINO"]
    # each seed's Avg. is the mean of its two models (0.3, then 0.5): mean 0.4, std over the seeds 0.1
    assert single["Avg."] == pytest.approx((0.4, 0.1, 2))
    assert single["photo"] == pytest.approx((0.25, 0.05, 2)) and single["aerial"] == pytest.approx((0.55, 0.15, 2))
    assert single["Avg."] == pytest.approx(table["GEMGR-DINO"]["Avg."])
    combined = frame[frame["method"] == "Single-DINO"]
    assert combined["run"].nunique() == 2  # one per seed
    assert combined[combined["metric"] == PARAMS_TOTAL]["value"].tolist() == [1400.0, 1400.0]  # both models kept
    assert combined[combined["metric"] == PARAMS_ACTIVE]["value"].tolist() == [700.0, 700.0]  # one runs per input


def test_the_settings_table_shows_every_value_of_a_swept_key(tmp_path):
    rows = []
    for seed in (0, 1):
        for shots, score in ((5, 0.1), (50, 0.3)):
            part = _rows(f"r{seed}{shots}", "GEM-DINO", seed, {"photo": score, "medical": score})
            rows += [{**row, "param:data.shots": f"{{'medical': {shots}}}"} for row in part]
    frame = _report(tmp_path, rows)
    assert len(per_domain_table(frame).rows) == 1  # the per-domain table selects one value
    table = dict(settings_table(frame).rows)
    assert table["GEM-DINO data.shots={'medical': 5}"]["Avg."] == pytest.approx((0.1, 0.0, 2))
    assert table["GEM-DINO data.shots={'medical': 50}"]["medical"] == pytest.approx((0.3, 0.0, 2))
    assert settings_table(_report(tmp_path, _rows("x", "GEM-DINO", 0, {"photo": 0.1}))) is None


def _transcribed_claims(loads: np.ndarray) -> dict[int, tuple[float, float]]:
    """TPR_e and FPR_e as written in report/claims.py: A_e = {d : argmax_j L[d, j] = e}, means over domains."""
    rates = {}
    for e in range(loads.shape[1]):
        mine = [d for d in range(loads.shape[0]) if int(np.argmax(loads[d])) == e]
        others = [d for d in range(loads.shape[0]) if d not in mine]
        if mine:
            rates[e] = (sum(loads[d, e] for d in mine) / len(mine), sum(loads[d, e] for d in others) / len(others))
    return rates


def test_expert_claims_follow_their_definition():
    loads = np.random.default_rng(0).dirichlet(np.ones(4), size=7)
    claims = expert_claims(loads)
    expected = _transcribed_claims(loads)
    assert claims["expert"].tolist() == sorted(expected)
    for row in claims.itertuples(index=False):
        assert pytest.approx(expected[row.expert]) == (row.TPR, row.FPR)
    deterministic = expert_claims(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]))
    assert deterministic[[TPR, FPR]].to_numpy().tolist() == [[1.0, 0.0], [1.0, 0.0]]  # a plan: (FPR 0, TPR 1)
    even = expert_claims(np.full((3, 2), 0.5))  # every domain spread evenly: expert 0 owns all, no FPR
    assert even[TPR].tolist() == [0.5] and np.isnan(even[FPR].iloc[0])


def test_the_claims_table_sets_a_plan_apart_from_a_spreading_router(tmp_path):
    rows = []
    for seed in (0, 1):
        rows += _rows(f"g{seed}", "GEM-DINO", seed, {"a": 0.3, "b": 0.3}, loads={"a": [1, 0], "b": [0, 1]})
        rows += _rows(f"s{seed}", "SoftMoE", seed, {"a": 0.2, "b": 0.2}, loads={"a": [0.6, 0.4], "b": [0.3, 0.7]})
    table = dict(claims_table(_report(tmp_path, rows)).rows)
    assert table["GEM-DINO"][TPR] == pytest.approx((1.0, 0.0, 2)) and table["GEM-DINO"][FPR] == pytest.approx((0, 0, 2))
    assert table["SoftMoE"][TPR] == pytest.approx((0.65, 0.0, 2)) and table["SoftMoE"][FPR] == pytest.approx(
        (0.35, 0, 2)
    )
    assert table["SoftMoE"]["experts with a dataset"] == pytest.approx((2.0, 0.0, 2))


def test_runs_without_experts_have_no_claims(tmp_path):
    frame = _report(tmp_path, _rows("d", "Mixed-DINO", 0, {"a": 0.3, "b": 0.2}))
    assert claims_table(frame) is None and expert_claims_figure(frame) == []


def test_heatmaps_show_one_seed_because_expert_numbers_differ_between_seeds(tmp_path):
    rows = _rows("g0", "GEM-DINO", 0, {"a": 0.3, "b": 0.3}, loads={"a": [1, 0], "b": [0, 1]})
    rows += _rows("g1", "GEM-DINO", 1, {"a": 0.3, "b": 0.3}, loads={"a": [0, 1], "b": [1, 0]})  # the same map
    (figure,) = routing_heatmaps(_report(tmp_path, rows))
    values, title = figure.draw.args[2:4]
    assert values.tolist() == [[1.0, 0.0], [0.0, 1.0]] and "seed 0" in title  # not a mean of 0.5 everywhere
