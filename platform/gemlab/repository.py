"""The repository gemlab runs from: its root, which jobs ship to a cluster and whose files they name.

The package lives in ``<repository>/platform/gemlab``. Knowing the root is
the repository's concern, not the engine's: a job submitted from here ships
this folder (``cluster/runtime_env.yaml``), whatever experiments folder a
run composes its config from.
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
