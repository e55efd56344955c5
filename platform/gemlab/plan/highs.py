"""Quiet HiGHS solver objects.

HiGHS prints its copyright banner on stdout when the first solver object of
a process is built -- before any option can switch output off. That line
would end up in the middle of ``gemlab plan`` tables and in anything a
caller pipes, so the first construction runs with file descriptor 1 pointed
at /dev/null.
"""

from __future__ import annotations

import os
import sys

import highspy

_banner_shown = False


def new_highs(*, threads: int = 1) -> highspy.Highs:
    """A HiGHS instance: console output off, one thread (determinism), tight tolerances."""
    global _banner_shown
    if _banner_shown:
        highs = highspy.Highs()
    else:
        sys.stdout.flush()
        saved = os.dup(1)
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 1)
            highs = highspy.Highs()
        finally:
            os.dup2(saved, 1)
            os.close(saved)
            os.close(devnull)
        _banner_shown = True
    highs.setOptionValue("output_flag", False)
    highs.setOptionValue("threads", threads)
    # HiGHS's default tolerances (1e-7) let the LP bound fall ~1e-7 below the
    # integral optimum; affinities are O(1), so tighter tolerances cost nothing
    # and keep the bound a bound at the planner's 1e-9 comparisons.
    highs.setOptionValue("primal_feasibility_tolerance", 1e-10)
    highs.setOptionValue("dual_feasibility_tolerance", 1e-10)
    return highs
