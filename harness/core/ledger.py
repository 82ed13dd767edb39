"""Which of the gate's checks ran and how they ended: the basis of the verdict.

pytest's exit status alone cannot say "every required check ran and passed": a session narrowed
with ``-k`` exits 0 having skipped parity entirely. The ledger records each check's tests as
collected and as reported, so the verdict (harness/report/outcome.py) can name what did not run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable


@dataclass
class CheckRecord:
    name: str
    collected: set[str] = field(default_factory=set)
    outcomes: dict[str, str] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        if not self.outcomes:
            return "not run"
        values = set(self.outcomes.values())
        if "failed" in values:
            return "failed"
        if values == {"skipped"}:
            return "skipped"
        if len(self.outcomes) < len(self.collected):
            return "incomplete"
        return "passed" if values <= {"passed", "skipped"} and "passed" in values else "skipped"

    def to_dict(self) -> dict[str, object]:
        return {
            "status": self.status,
            "tests": dict(sorted(self.outcomes.items())),
            "messages": self.messages[:20],
        }


class Ledger:
    def __init__(self, checks: Iterable[str] = ()) -> None:
        self.records = {name: CheckRecord(name) for name in checks}

    def record_for(self, check: str) -> CheckRecord:
        return self.records.setdefault(check, CheckRecord(check))

    def collected(self, check: str, nodeid: str) -> None:
        self.record_for(check).collected.add(nodeid)

    def reported(self, check: str, nodeid: str, outcome: str, message: str = "") -> None:
        record = self.record_for(check)
        previous = record.outcomes.get(nodeid)
        # A test reports setup, call and teardown: the worst phase decides.
        if previous != "failed" and not (previous == "skipped" and outcome == "passed"):
            record.outcomes[nodeid] = outcome
        if message and outcome in ("failed", "skipped"):
            record.messages.append(f"{nodeid}: {message}")

    @property
    def ran_anything(self) -> bool:
        return any(record.outcomes for record in self.records.values())

    def to_dict(self) -> dict[str, object]:
        return {name: record.to_dict() for name, record in self.records.items()}


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reasons: tuple[str, ...]

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        if self.passed:
            return "PASSED | every required check ran and passed"
        return "FAILED | " + "; ".join(self.reasons)
