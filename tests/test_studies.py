"""The papers' studies (experiments/sweep/study_*.yaml): each names the command that runs it, sweeps at least three
seeds, composes every trial, and runs end to end -- cut to one trial and two steps, the mechanics only -- through
`gemlab sweep` and `gemlab report` (the real runs are docs/results.md's, not the tests')."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from gemlab.cli import main
from gemlab.engine.config import DEFAULT_CONFIG_DIR, ConfigError, compose_config
from gemlab.storage import Location
from gemlab.tune.stages import ParentStage
from gemlab.tune.sweep import SweepSpec, check_trials, sweep_name

STUDIES = sorted(path.stem for path in (DEFAULT_CONFIG_DIR / "sweep").glob("study_*.yaml"))
# study_budget: tests/test_param_budget.py runs it, checking each trial's parameter counts;
# study_adapt_parents: study_adapt runs it first
RUN_ELSEWHERE = {"study_budget", "study_adapt_parents"}
EXPECTED_TABLES = {
    "study_adapt": "adaptation.md",
    "study_precision": "plans.md",
    "study_table7": "plans.md",
    "study_mapping": "plans.md",
    "study_table2": "claims.md",
}


def test_the_studies_are_shipped_with_their_command_and_three_seeds():
    shipped = {"study_table7", "study_precision", "study_moge", "study_dqroute", "study_budget", "study_adapt"}
    shipped |= {"study_table2", "study_table2_single", "study_shift", "study_mismatch", "study_fewshot"}
    shipped |= {"study_mapping", "study_class_level"}
    assert shipped <= set(STUDIES)
    for name in STUDIES:
        header = (DEFAULT_CONFIG_DIR / "sweep" / f"{name}.yaml").read_text()
        assert f"gemlab sweep sweep={name}\n" in header and "gemlab report" in header, name
        seeds = SweepSpec.from_config(compose_config([f"sweep={name}"])).space["seed"]
        assert len(set(seeds)) >= 3, name


@pytest.mark.slow
def test_every_trial_of_every_study_composes():
    for name in STUDIES:
        spec = SweepSpec.from_config(compose_config([f"sweep={name}"]))
        check_trials(spec, [f"sweep={name}"], None, spec.variant_links())


# Each study runs cut to one trial per stage: the first value of every swept key, or the value named here.
KEPT = {"study_table2": {"variant": ["GEMGR-DINO"]}, "study_class_level": {"variant": ["class-GEM-DINO"]}}
DETECTION_CUT = [  # uodb_tiny's sizes: the detection studies' mechanics in seconds
    "model.dim=32", "model.hidden=64", "model.heads=2", "model.points=2", "model.encoder_layers=1",
    "model.decoder_layers=2", "model.num_queries=10", "model.dn_groups=1", "data.image_size=64",
    "trainer.batch_size=4", "trainer.eval_batch_size=16", "affinity.samples_per_domain=8",
]  # fmt: skip


def cut_studies(folder: Path) -> Path:
    """A copy of experiments/ whose study sweeps each search one trial (:data:`KEPT`, else every key's first value)."""
    shutil.copytree(DEFAULT_CONFIG_DIR, folder)
    for path in (folder / "sweep").glob("study_*.yaml"):
        config = yaml.safe_load(path.read_text())
        space = config["sweep"]["space"]
        config["sweep"]["space"] = {key: [values[0]] for key, values in space.items()} | KEPT.get(path.stem, {})
        path.write_text("# @package _global_\n" + yaml.safe_dump(config, sort_keys=False))
    return folder


def detection_cut(name: str, synth_uodb_dir: Path) -> list[str] | None:
    """The overrides that shrink a detection study (None for a classification study): uodb_tiny's sizes, and
    three small domains where a domain-level study trains every domain (a class-level plan needs as many
    distinct classes as experts: it keeps them all)."""
    cfg = compose_config([f"sweep={name}"])
    if cfg.data.source != "synth_uodb":
        return None
    every_domain = cfg.data.domains is None and "data.domains" not in cfg.sweep.space and cfg.plan.level == "domain"
    return [f"data.path={synth_uodb_dir}", *DETECTION_CUT, *(["data.domains=[faces,clipart,medical]"] * every_domain)]


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(STUDIES) - RUN_ELSEWHERE))
def test_a_study_runs_and_reports(ray_session, digits_dir, synth_uodb_dir, tmp_path, name):
    config_dir = cut_studies(tmp_path / "experiments")
    data = detection_cut(name, synth_uodb_dir) or [f"data.path={digits_dir}"]
    cut = ["trainer.max_steps=2", "trainer.eval_interval=2", "affinity.samples_per_domain=16", *data]
    overrides = [f"sweep={name}", f"storage_path={tmp_path}", *cut]
    assert main(["sweep", "--config-dir", str(config_dir), *overrides]) == 0
    cfg = compose_config(overrides, str(config_dir))
    sweep_dir = tmp_path / "sweeps" / sweep_name(cfg, SweepSpec.from_config(cfg))  # a two-stage study has two
    report = tmp_path / "report"
    assert main(["report", str(sweep_dir), "--out", str(report)]) == 0
    assert (report / "per_domain.md").is_file() and (report / "parameters.md").is_file()
    assert (report / EXPECTED_TABLES.get(name, "per_domain.md")).is_file()


def test_a_two_stage_sweep_links_each_trial_to_the_parent_with_its_values(tmp_path):
    stage = ParentStage.from_block({"sweep": "p", "match": ["router", "seed"], "set": {"adapt.add": ["noise"]}})
    parents = [{"router": r, "seed": s} for r in ("gem", "topk") for s in (0, 1)]
    trials = [{"router": "topk", "seed": 1}, {"router": "gem", "seed": 0}]
    links = stage.links(trials, parents, Location.parse(tmp_path))
    assert links == {
        0: [f"adapt.parent='{(Location.parse(tmp_path) / 'trial-003').uri}'", "adapt.add=[noise]"],
        1: [f"adapt.parent='{(Location.parse(tmp_path) / 'trial-000').uri}'", "adapt.add=[noise]"],
    }
    assert stage.parent_overrides(["sweep=child", "trainer.max_steps=2"]) == ["trainer.max_steps=2", "sweep=p"]
    with pytest.raises(ConfigError, match=r"trial 0 \{'router': 'soft', 'seed': 1\} matches 0 trials of sweep=p"):
        stage.links([{"router": "soft", "seed": 1}], parents, Location.parse(tmp_path))
    with pytest.raises(ConfigError, match=r"\['seed'\] are not swept"):
        stage.links([{"router": "gem"}], parents, Location.parse(tmp_path))
    for block, message in (
        ({"sweep": "p", "match": []}, "sweep.parents.match"),
        ({"sweep": "p", "match": ["seed"], "set": {"adapt.parent": "x"}}, "sweep.parents.set"),
        ({"sweep": "p", "match": ["seed"], "sets": {}}, "sweep.parents.sets: not a key"),
        ({"match": ["seed"]}, "sweep.parents.sweep=None"),
    ):
        with pytest.raises(ConfigError, match=message):
            ParentStage.from_block(block)
    assert ParentStage.from_block(None) is None
