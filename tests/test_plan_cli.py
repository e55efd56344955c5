"""``gemlab plan`` end to end: real files, real HiGHS, errors that name the culprit."""

import json
import subprocess
import sys

import numpy as np
import pytest

from gemlab.cli import main
from gemlab.plan.affinity import CostMatrix, save_cost_matrix
from gemlab.plan.plan import Plan


def _write_costs(path):
    costs = np.array([[0.9, 0.1, 0.2], [0.8, 0.3, 0.1], [0.85, 0.2, 0.4], [0.1, 0.7, 0.6]])
    save_cost_matrix(CostMatrix(costs, ("coco", "voc", "kitti", "dota"), ("e0", "e1", "e2")), path)
    return path


def test_cost_file_to_plan_json(tmp_path, capsys):
    costs = _write_costs(tmp_path / "costs.csv")
    out = tmp_path / "plan.json"
    assert main(["plan", str(costs), "--capacity", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "LP bound" in printed and "value/LP 1.000000" in printed
    plan = Plan.load(out)
    assert plan.mapping["dota"] == "e1"
    assert max(np.bincount(plan.assignment)) <= 2


def test_same_inputs_give_byte_identical_files(tmp_path):
    costs = _write_costs(tmp_path / "costs.csv")
    for name in ("a.json", "b.json"):
        assert main(["plan", str(costs), "--capacity", "2", "--out", str(tmp_path / name)]) == 0
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()


def test_load_mode_from_loads_file(tmp_path, capsys):
    costs = _write_costs(tmp_path / "costs.csv")
    loads = tmp_path / "loads.json"
    loads.write_text(json.dumps({"coco": 5, "voc": 2, "kitti": 2, "dota": 1}))
    assert main(["plan", str(costs), "--loads", str(loads), "--load-capacity", "5"]) == 0
    assert "capacity violations: none" in capsys.readouterr().out


def test_compare_shows_argmax_violation(capsys):
    assert main(["plan", "--scenario", "uodb12", "--compare", "argmax"]) == 0
    lines = capsys.readouterr().out.splitlines()
    gem_line = next(line for line in lines if line.startswith("gem "))
    argmax_line = next(line for line in lines if line.startswith("argmax "))
    assert "overloaded experts 0" in gem_line
    assert "overloaded experts 0" not in argmax_line


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--capacity", "1"], "total capacity 3 is smaller than the 4 tasks"),
        (["--capacity", "0"], "capacity: must be finite and > 0"),
        (["--capacity", "2", "--precision", "31"], "precision: must be in 1..30"),
        (["--capacity", "two"], "--capacity: expected integers"),
        (["--load-capacity", "3"], "--load-capacity needs --loads"),
    ],
)
def test_bad_input_fails_cleanly_without_output_file(tmp_path, capsys, arguments, message):
    costs = _write_costs(tmp_path / "costs.csv")
    out = tmp_path / "plan.json"
    assert main(["plan", str(costs), *arguments, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["costs.csv"]


def test_cost_file_without_names_is_rejected(tmp_path, capsys):
    bare = tmp_path / "bare.csv"
    bare.write_text("0,1\n0.5,0.2\n0.1,0.9\n")
    assert main(["plan", str(bare)]) == 2
    assert "bare.csv" in capsys.readouterr().err


def test_console_script_runs_synthetic_class_level_plan(tmp_path):
    out = tmp_path / "plan.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gemlab.cli",
            "plan",
            "--synthetic",
            "1203",
            "64",
            "--seed",
            "3",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert not result.stdout.startswith("Running HiGHS")  # the solver banner is kept off stdout
    plan = Plan.load(out)
    assert plan.num_tasks == 1203 and plan.ratio == pytest.approx(1.0, abs=1e-12)
