"""The src layout must not shadow the standard library's ``platform`` module."""

import subprocess
import sys
from pathlib import Path

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
