"""How much a failing parity property test may spend after its first failure.

A failing gate used to take ten times a passing one: Hypothesis, having found a failing example,
went on generating (``report_multiple_bugs``: up to 1,000 more calls, or 10 s in recent versions)
and then shrank each distinct failure for up to 500 successful shrinks or 300 s, every call a
float64 pass of the model. The profiles turn ``report_multiple_bugs`` off (harness/core/profiles.py);
this budget bounds the shrinking: after a test's first failure it runs at most ``limit`` more
examples, where ``limit`` is half the profile's ``max_examples`` (at least ``MIN_LIMIT``), so a
failing test spends at most about 1.5 times the examples of a passing one.

Past the budget, a new example is rejected (``hypothesis.reject``: not run, not a pass) and the
shrinker, finding nothing smaller that fails, stops with the smallest failing case it has. A case
already seen to fail is always run again, so the case Hypothesis finally reports is replayed and
fails for real. The count is of examples, not seconds, so a derandomized profile (``ci``) still runs
the same examples on a loaded machine; the seconds are reported.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

MIN_LIMIT = 10


def limit_for(max_examples: int) -> int:
    """Examples a test may run after its first failure, for a profile of ``max_examples``."""
    return max(max_examples // 2, MIN_LIMIT)


@dataclass
class TestSpend:
    """One parity test's examples, counted from its first failure on."""

    test: str
    limit: int
    examples: int = 0  # examples run, first failure included
    first_failure_at: int | None = None  # the example number of the first failure (1-based)
    after_failure: int = 0  # examples run after it
    not_run: int = 0  # examples rejected because the budget was spent
    seconds_after_failure: float = 0.0
    failed_at: float = field(default=0.0, repr=False)
    failing: set[str] = field(default_factory=set, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "test": self.test, "limit": self.limit, "examples": self.examples,
            "first_failure_at": self.first_failure_at, "examples_after_first_failure": self.after_failure,
            "seconds_after_first_failure": round(self.seconds_after_failure, 2),
            "examples_not_run": self.not_run,
        }  # fmt: skip


def describe(entry: Mapping[str, Any]) -> str:
    """One line on what a failing test spent after its first failure, from ``TestSpend.to_dict``."""
    stopped = (
        f"; {entry['examples_not_run']} more not run: its budget of {entry['limit']} was spent"
        if entry["examples_not_run"] else ""
    )  # fmt: skip
    return (
        f"{entry['test']}: first failure at example {entry['first_failure_at']}, then "
        f"{entry['examples_after_first_failure']} examples and {entry['seconds_after_first_failure']} s "
        f"shrinking it{stopped}"
    )


def current_test() -> str:
    """The running pytest test's node id (pytest sets PYTEST_CURRENT_TEST for every phase)."""
    return os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0]


class FailureBudget:
    """The spend of each parity test of this process, keyed by its node id."""

    def __init__(self) -> None:
        self.tests: dict[str, TestSpend] = {}
        self._current: TestSpend | None = None

    def admit(self, case: Any, *, test: str | None = None) -> None:
        """Called before ``case`` runs inside a Hypothesis test (GateSession.check_parity): rejects
        the example (Hypothesis then draws or shrinks to another) once this test's budget after its
        first failure is spent, unless ``case`` already failed."""
        from hypothesis import reject, settings

        name = test if test is not None else current_test()
        spend = self.tests.get(name)
        if spend is None:
            spend = self.tests[name] = TestSpend(name, limit_for(settings.default.max_examples))
        if spend.first_failure_at is not None and spend.after_failure >= spend.limit and repr(case) not in spend.failing:
            spend.not_run += 1
            reject()
        self._current = spend

    def observe(self, case: Any, passed: bool) -> TestSpend | None:
        """Called after each parity comparison; counts it for the test that admitted it, and
        returns that test's spend once it has failed."""
        spend, self._current = self._current, None
        if spend is None:  # a comparison outside a budgeted property test
            return None
        now = time.perf_counter()
        spend.examples += 1
        if spend.first_failure_at is None:
            if not passed:
                spend.first_failure_at, spend.failed_at = spend.examples, now
                spend.failing.add(repr(case))
                return spend
            return None
        spend.after_failure += 1
        spend.seconds_after_failure = now - spend.failed_at
        if not passed:
            spend.failing.add(repr(case))
        return spend
