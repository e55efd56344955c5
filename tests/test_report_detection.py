"""`gemlab report` on detection runs: selected and tabled by COCO AP, figures labelled ap, no mix with classification.

The runs are written as a detection run writes them (``write_results`` of
records with ``"metric": "ap"``, from composed ``uodb_mini`` configs), so
the report reads what the engine leaves behind; no data and no training.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import pandas as pd
import pytest

from gemlab.cli import main
from gemlab.engine.config import compose_config
from gemlab.engine.outputs import write_results
from gemlab.report.figures import cross_expert_matrices
from gemlab.report.results import ReportError, load_results, selected, task_metric
from gemlab.report.tables import per_domain_table, to_markdown
from gemlab.results_schema import AP, TASK_METRICS
from gemlab.storage import Location
from helpers import evaluation_record

NAN = float("nan")
LOADS = {"voc": [0.9, 0.1, 0.0, 0.0], "watercolor": [0.0, 0.0, 1.0, 0.0]}


def detection_record(step: int, ap: float, cross: bool = False, ap50_bonus: float = 0.2) -> dict:
    """One evaluation of two domains: ``watercolor`` at half ``voc``'s AP, and without large objects (NaN)."""
    domains = {
        name: {
            "ap": scale * ap,
            "ap50": scale * ap + ap50_bonus,
            "ap75": scale * ap / 2,
            "ap_small": scale * ap / 4,
            "ap_medium": scale * ap,
            "ap_large": 0.6 if name == "voc" else NAN,
            "expert_load": LOADS[name],
        }
        for name, scale in (("voc", 1.0), ("watercolor", 0.5))
    }
    record = {
        "step": step,
        "metric": "ap",
        "domains": domains,
        "train": {"loss": 3.2, "loss/class": 1.1},
        "samples_per_s": 40.0,
        "cpu_ms_per_sample": 25.0,
        "allreduce_bytes_per_step": 1 << 20,
    }
    if cross:  # through expert j: the routed expert (voc 0, watercolor 2) scores best
        record["cross_expert"] = {"voc": [ap, 0.1, 0.05, 0.0], "watercolor": [0.02, 0.0, ap / 2, 0.01]}
    return record


def write_run(folder: Path, name: str, overrides: list[str], history: list[dict]) -> Path:
    cfg = compose_config(["experiment=uodb_mini", *overrides])  # composing reads no data
    return Path(write_results(Location.parse(folder / name), cfg, name, history).path)


@pytest.fixture
def detection_runs(tmp_path: Path) -> Path:
    """GEM (with a cross-expert matrix) and top-k, two seeds each; a worse GEM candidate; an early, better step."""
    runs = tmp_path / "runs"
    for seed, (gem_ap, topk_ap) in enumerate(((0.5, 0.2), (0.3, 0.4))):
        early = [detection_record(500, 0.9, cross=True)]  # better, but not the last evaluation
        write_run(runs, f"gem-{seed}", ["router=gem", f"seed={seed}"], [*early, detection_record(1000, gem_ap, True)])
        write_run(runs, f"topk-{seed}", ["router=topk", f"seed={seed}"], [detection_record(1000, topk_ap)])
        # precision 4: a lower AP and a far higher AP50; selection goes by AP whatever --metric shows
        worse = [detection_record(1000, 0.1, True, ap50_bonus=0.8)]
        write_run(runs, f"gem-p4-{seed}", ["router=gem", "plan.precision=4", f"seed={seed}"], worse)
    return runs


def report(*argv: str) -> int:
    return main(["report", *argv])


def test_detection_runs_are_selected_by_ap_at_their_last_evaluation(detection_runs):
    frame = load_results([detection_runs])
    assert task_metric(frame) == AP == TASK_METRICS["detection"]
    picked = selected(frame)
    assert sorted(set(picked["run"])) == ["gem-0", "gem-1", "topk-0", "topk-1"]
    assert set(picked["step"]) == {1000}


def test_the_report_tables_ap_per_domain_and_draws_ap_figures(detection_runs, tmp_path, capsys):
    out = tmp_path / "report"
    assert report(str(detection_runs), "--out", str(out)) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    markdown = (out / "per_domain.md").read_text()
    assert markdown.startswith("**per-domain ap (mean ± std over seeds)** (×100)")
    assert "| method | voc | watercolor | Avg. |" in markdown
    assert "| gem | 40.0 ± 10.0 | 20.0 ± 5.0 | 30.0 ± 7.5 |" in markdown
    assert "| topk | 30.0 ± 10.0 | 15.0 ± 5.0 | 22.5 ± 7.5 |" in markdown
    assert "per-domain ap (mean" in captured.out and "accuracy" not in captured.out
    assert "gem,watercolor,0.2" in (out / "per_domain.csv").read_text()
    figures = {p.name for p in out.glob("*.png")}
    assert {"heatmap-gem.png", "heatmap-topk.png", "cross_expert-gem.png"} <= figures
    assert "cross_expert-topk.png" not in figures  # top-k has no domain table to force experts by
    assert all((out / name).stat().st_size > 0 and (out / name).read_bytes()[:4] == b"\x89PNG" for name in figures)


def test_the_cross_expert_matrix_is_labelled_with_the_task_metric(detection_runs):
    (figure,) = cross_expert_matrices(load_results([detection_runs]))
    assert figure.file_name == "cross_expert-gem.png"
    matplotlib.use("Agg")
    drawn = figure.draw(plt)
    try:
        image_axes, bar_axes = drawn.axes
        assert image_axes.get_title().startswith("cross-expert ap: gem")
        assert bar_axes.get_ylabel() == "ap"
    finally:
        plt.close(drawn)


def test_another_metric_is_tabled_for_the_candidates_ap_selected(detection_runs, tmp_path):
    out = tmp_path / "report"
    assert report(str(detection_runs), "--out", str(out), "--metric", "ap50") == 0
    markdown = (out / "per_domain.md").read_text()
    assert markdown.startswith("**per-domain ap50 (mean ± std over seeds)**")
    assert "| gem | 60.0 ± 10.0 | 40.0 ± 5.0 | 50.0 ± 7.5 |" in markdown  # precision 8's, not precision 4's 90+


def test_a_metric_coco_could_not_measure_is_a_missing_cell(detection_runs, tmp_path):
    table = per_domain_table(load_results([detection_runs]), "ap_large")
    gem = dict(table.rows)["gem"]
    assert gem["voc"] == pytest.approx((0.6, 0.0, 2)) and "watercolor" not in gem and "Avg." not in gem
    assert "| gem | 60.0 ± 0.0 | – | – |" in to_markdown(table)
    out = tmp_path / "report"
    assert report(str(detection_runs), "--out", str(out), "--metric", "ap_large") == 0
    assert "nan" not in (out / "per_domain.md").read_text() + (out / "per_domain.csv").read_text()


def test_a_diverged_detection_method_is_left_out_with_a_note_naming_ap(detection_runs, tmp_path, capsys):
    write_run(detection_runs, "dino-0", ["model=dino"], [detection_record(1000, NAN)])  # Mixed-DINO: no router
    assert report(str(detection_runs), "--out", str(tmp_path / "report")) == 0
    assert capsys.readouterr().err == "gemlab report: note: no finite ap to select by, left out: 'dense'\n"


def test_detection_results_without_a_finite_ap_are_refused_naming_ap(tmp_path, capsys):
    path = write_run(tmp_path / "runs", "gem-0", ["router=gem"], [detection_record(1000, NAN)])
    assert report(str(path), "--out", str(tmp_path / "report")) == 2
    assert capsys.readouterr().err == f"gemlab report: error: {path}: no finite 'all'-domain ap to select runs by\n"


def test_classification_and_detection_runs_together_are_refused_naming_the_files(detection_runs, tmp_path, capsys):
    classification = compose_config(["experiment=quickstart"])
    written = write_results(Location.parse(tmp_path / "cls"), classification, "c", [evaluation_record(9, 0.8)])
    cls_file = Path(written.path)
    det_file = detection_runs / "gem-0" / "results.parquet"
    out = tmp_path / "report"
    assert report(str(cls_file), str(det_file), "--out", str(out)) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("gemlab report: error: "), captured.err
    assert lines[0] == (
        f"gemlab report: error: {cls_file}: classification runs (accuracy), {det_file}: detection runs (ap); "
        "one report takes one task, report each apart"
    )
    assert not out.exists() and captured.out == ""
    both = pd.concat([pd.read_parquet(cls_file), pd.read_parquet(det_file)])  # as a hand-built frame: refused too
    with pytest.raises(ReportError, match="the results hold accuracy and ap under 'all'"):
        task_metric(both)
