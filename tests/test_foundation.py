"""Foundations: the src layout shadows no standard module, imports stay lazy, the version is the packaged one."""

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from gemlab.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_stdlib_platform_is_not_shadowed_from_repo_root():
    # Run from the repository root, where a ``platform/`` folder exists.
    code = "import platform, gemlab; print(platform.system()); print(platform.__file__)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    system, location = result.stdout.split()
    assert system == "Linux"
    assert not Path(location).is_relative_to(REPO)


def test_no_platform_package_marker():
    assert not (REPO / "platform" / "__init__.py").exists()


def test_plan_package_imports_neither_torch_nor_ray():
    code = (
        "import sys, gemlab.plan.planner, gemlab.plan.command, gemlab.plan.incremental, gemlab.plan.placement;"
        "print(sorted(m for m in ('torch', 'ray') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_gemlab_version_prints_the_packaged_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert capsys.readouterr().out.strip() == f"gemlab {declared}"  # __version__ kept equal to pyproject's


def test_no_command_module_imports_ray_at_import_time():
    """The embedded Ray's loopback binding is read when ``ray`` is first imported, which must be in ensure_ray."""
    code = "import sys, gemlab.cli; print('ray' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
