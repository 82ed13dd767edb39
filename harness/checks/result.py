"""The result value of a check that lists problems: truthy when it found none, and ``str()``
states the verdict first (``PASSED | ...`` / ``FAILED | ...``), so tests read
``assert result, str(result)``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CheckResult:
    check: str
    passed_summary: str  # what passing means, e.g. "two runs of one session are bitwise equal"
    problems: tuple[str, ...] = ()
    context: str = ""  # the input it ran on, e.g. "normal inputs (batch=2, seed=3)"

    def __bool__(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        where = f" on {self.context}" if self.context else ""
        if not self.problems:
            return f"PASSED | {self.check}: {self.passed_summary}{where}"
        return f"FAILED | {self.check}: " + "; ".join(self.problems) + where
