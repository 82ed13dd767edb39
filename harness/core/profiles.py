"""Hypothesis settings profiles: one switch between a fast local run and a thorough CI run.

The parity check runs as four Hypothesis tests (batch 1, 2, one besides the trace size, and one
drawing the batch), so ``ci`` runs 4 x 60 = 240 parity examples. ``smoke`` is ``dev`` without shrinking, derandomized:
a fast yes/no for CI smoke runs and the harness's own tests; use ``dev`` to get a minimal
falsifying example.

Every profile reports one failure per test (``report_multiple_bugs=False``): after the first failing
example Hypothesis goes straight to shrinking it instead of searching for more, and
harness/core/failure_budget.py bounds the shrinking.
"""

from __future__ import annotations

PROFILES = ("dev", "ci", "thorough", "smoke")  # every profile register_profiles() registers
DEFAULT_PROFILE = "dev"  # plain `pytest conformance`
GATE_RUN_PROFILE = "ci"  # `onnx-gate run` and export_and_register_model()


def with_gate_run_profile(args: list[str]) -> list[str]:
    """pytest arguments for a whole gate run: the ``ci`` profile unless they name one."""
    if any(a == "--hypothesis-profile" or a.startswith("--hypothesis-profile=") for a in args):
        return args
    return [*args, f"--hypothesis-profile={GATE_RUN_PROFILE}"]


def current_profile() -> str:
    """The Hypothesis profile this session's property tests ran with, for the reports."""
    from hypothesis import settings

    # Hypothesis's public getter (recent versions only) fails when no profile was loaded.
    return settings._current_profile or "default"  # type: ignore[attr-defined]


def register_profiles() -> None:
    from hypothesis import HealthCheck, Phase, settings

    # Model runs take milliseconds to seconds: a deadline would only measure machine load.
    common = dict(
        deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True, report_multiple_bugs=False
    )
    # No "explain" phase: after shrinking it replays the failing case with each part varied, without
    # the shrinker's stall limit, ~1,000 proposals that the failure budget then rejects one by one.
    common["phases"] = (Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink)
    # Every profile builds on Hypothesis's own defaults, not on the profile loaded now: Hypothesis
    # loads its derandomized, database-less `ci` profile when it sees a CI variable, and `dev` had
    # inherited both there.
    common["parent"] = settings.get_profile("default")
    settings.register_profile("dev", max_examples=5, derandomize=False, **common)
    settings.register_profile("ci", max_examples=60, derandomize=True, database=None, **common)
    settings.register_profile("thorough", max_examples=500, derandomize=False, **common)
    no_shrink = (Phase.explicit, Phase.reuse, Phase.generate)
    smoke = {**common, "phases": no_shrink}
    settings.register_profile("smoke", max_examples=5, derandomize=True, database=None, **smoke)
