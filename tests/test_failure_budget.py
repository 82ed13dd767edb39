"""A failing parity test ends fast: one failure per test, and a bounded number of examples spent
shrinking it, with the reported case still one that really fails (harness/core/failure_budget.py)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from harness.core import config as gate_config
from harness.core.failure_budget import FailureBudget, describe, limit_for
from harness.core.profiles import register_profiles
from harness.core.strategies import InputCase, input_cases
from tests.conftest import HERE

EXAMPLES = 20  # a budget of 10 after the first failure: less than shrinking this case takes
CONFIG = """
model = "user_models:frame_net"
outputs = ["per_frame", "pooled"]
[[inputs]]
name = "frames"
shape = ["batch", 4, "time"]
range = [-1.0, 1.0]
dims = { batch = [1, 4], time = [3, 24] }
"""


def _failing_property(budget: FailureBudget | None, ran: list[Any], tmp_path: Path):
    """The gate's own input strategy, failing wherever the time axis is longer than 8 steps (most
    draws): Hypothesis's shrinker then walks every field of the case down, one model run per step in
    the gate."""
    config = gate_config.parse(tomllib.loads(CONFIG), tmp_path, search_dirs=(HERE,))

    # The gate's phases, set here so that no profile another test loaded changes them.
    phases = (Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink)

    @settings(max_examples=EXAMPLES, derandomize=True, database=None, report_multiple_bugs=False, deadline=None,
              phases=phases)
    @given(input_cases(config))
    def property_test(case: InputCase) -> None:
        if budget is not None:
            budget.admit(case, test="property")
        ran.append(case)
        passed = case.sizes["time"] <= 8
        if budget is not None:
            budget.observe(case, passed)
        assert passed, f"time {case.sizes['time']} in {case!r}"

    return property_test


def _falsified(test) -> str:
    with pytest.raises(AssertionError) as raised:
        test()
    return str(raised.value).split(" in ", 1)[1].splitlines()[0]


def test_after_its_first_failure_a_test_runs_at_most_its_budget_and_reports_a_case_that_really_fails(tmp_path):
    unbounded: list[Any] = []
    _falsified(_failing_property(None, unbounded, tmp_path))
    budget, ran = FailureBudget(), []
    reported = _falsified(_failing_property(budget, ran, tmp_path))
    spend = budget.tests["property"]
    limit = limit_for(EXAMPLES)
    # The shrinker's own replays of a case known to fail (at its start and the final one) are run too.
    assert spend.first_failure_at is not None and spend.after_failure <= limit + 2, spend
    assert spend.not_run > 0 and len(ran) == spend.examples, spend
    assert len(unbounded) > len(ran), (len(unbounded), len(ran))
    # Hypothesis reports the last run of the smallest failing case: a case that was run and failed.
    assert reported == repr(ran[-1]) and ran[-1].sizes["time"] > 8
    line = describe(spend.to_dict())
    assert line.startswith(f"property: first failure at example {spend.first_failure_at}, then {spend.after_failure} examples and ")
    assert f"{spend.not_run} more not run: its budget of {limit} was spent" in line


def test_a_passing_test_is_not_bounded_and_records_no_spend():
    budget, ran = FailureBudget(), []

    @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None)
    @given(st.integers(0, 1000))
    def passing(value: int) -> None:
        budget.admit(value, test="passing")
        ran.append(value)
        budget.observe(value, True)

    passing()
    assert len(ran) == EXAMPLES and budget.tests["passing"].first_failure_at is None


def test_every_gate_profile_reports_one_failure_per_test_and_skips_explaining_it():
    from hypothesis import settings as hypothesis_settings

    from harness.core.profiles import PROFILES

    register_profiles()
    assert all(hypothesis_settings.get_profile(name).report_multiple_bugs is False for name in PROFILES)
    # "explain" replays a failing case with each part varied and no stall limit: rejected call after call.
    assert not any(Phase.explain in hypothesis_settings.get_profile(name).phases for name in PROFILES)
    assert limit_for(60) == 30 and limit_for(5) == 10
