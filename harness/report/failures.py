"""Failed checks in brief: one terminal line per failed check, the full detail in the report.

A defective ONNX file fails a dozen tests, each with a long pytest traceback; the reader wants
to know which checks blocked and why. The tracebacks go to ``failures.txt`` in the run's report
folder (and to junit.xml, as always); ``-v`` or an explicit ``--tb`` puts them back on screen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

FILE_NAME = "failures.txt"


@dataclass(frozen=True)
class Failure:
    nodeid: str
    check: str | None
    when: str
    message: str  # the first line
    detail: str  # everything pytest would have printed

    @property
    def test(self) -> str:
        return self.nodeid.rsplit("/", 1)[-1]


@dataclass
class Failures:
    brief: bool
    items: list[Failure] = field(default_factory=list)

    def add(self, failure: Failure) -> None:
        self.items.append(failure)

    def lines(self) -> list[str]:
        """One line per failed check (its first failure), one per failed test outside any check."""
        by_check: dict[str, list[Failure]] = {}
        outside = []
        for failure in self.items:
            if failure.check is None:
                outside.append(f"  {failure.test}: {failure.message}")
            else:
                by_check.setdefault(failure.check, []).append(failure)
        lines = []
        for check, failures in by_check.items():
            more = f" (+{len(failures) - 1} more)" if len(failures) > 1 else ""
            lines.append(f"  {check}: {failures[0].test}: {failures[0].message}{more}")
        return lines + outside

    def write(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / FILE_NAME
        rule = "=" * 100
        sections = [
            f"{rule}\n{failure.nodeid} ({failure.check or 'no check'}, {failure.when})\n{rule}\n{failure.detail}\n"
            for failure in self.items
        ]
        path.write_text("\n".join(sections), encoding="utf-8")
        return path
