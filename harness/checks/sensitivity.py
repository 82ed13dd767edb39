"""Input sensitivity: every input should change the outputs. A model whose outputs do not depend
on an input passes parity trivially for it (a bad init, a wiring bug, an argument never used), so
the gate says so: a finding naming the input, blocking only with ``block_on_ignored_inputs``.
Inputs marked ``may_be_ignored = true`` are skipped."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Mapping

from harness.checks.declared import declare_check
from harness.compare.rule import Finding
from harness.core.inputs import InputCase, describe_case

if TYPE_CHECKING:
    import numpy as np

    from harness.core.config import GateConfig
    from harness.runtime.runners import Runner

ATTEMPTS = 8  # draws tried to find a value of the input that differs from the first one


CHECK = declare_check("sensitivity", order=80)


@dataclass(frozen=True)
class SensitivityResult:
    findings: tuple[Finding, ...]
    checked: tuple[str, ...]
    skipped: tuple[str, ...]  # may_be_ignored, or inputs that can take one value only

    def __bool__(self) -> bool:
        return not any(f.blocking for f in self.findings)

    def __str__(self) -> str:
        head = "PASSED" if self else "FAILED"
        if not self.findings:
            summary = f"the outputs depend on every checked input ({', '.join(self.checked) or 'none'})"
        else:
            summary = "; ".join(f.message for f in self.findings)
        skipped = f"; not checked: {', '.join(self.skipped)}" if self.skipped else ""
        return f"{head} | sensitivity: {summary}{skipped}"


def _same(first: Mapping[str, np.ndarray], second: Mapping[str, np.ndarray]) -> bool:
    import numpy as np

    return all(
        first[name].shape == second[name].shape
        and np.array_equal(first[name], second[name], equal_nan=first[name].dtype.kind in "fc")
        for name in first
    )  # fmt: skip


def check_sensitivity(config: GateConfig, runner: Runner) -> SensitivityResult:
    """For each input, two feeds that differ in that input only: the outputs must differ."""
    import numpy as np

    base_case = InputCase("uniform", config.trace_sizes, seed=1)
    base = base_case.materialize(config)
    reference = runner.infer(base)
    findings, checked, skipped = [], [], []
    for spec in config.inputs:
        if spec.may_be_ignored:
            skipped.append(f"{spec.name} (may_be_ignored)")
            continue
        changed = None
        for attempt in range(2, 2 + ATTEMPTS):
            other = replace(base_case, seed=attempt).materialize(config)[spec.name]
            if not np.array_equal(other, base[spec.name]):
                changed = other
                break
        if changed is None:
            skipped.append(f"{spec.name} (takes one value only)")
            continue
        if not any(np.isfinite(values).any() for values in reference.values() if values.dtype.kind in "fc"):
            if all(values.dtype.kind in "fc" for values in reference.values()):
                skipped.append(f"{spec.name} (every output is NaN/Inf on the drawn input)")
                continue
        checked.append(spec.name)
        if _same(reference, runner.infer({**base, spec.name: changed})):
            findings.append(Finding(
                "ignored_input", spec.name,
                f"the outputs do not depend on input {spec.name!r}: two different values gave bitwise equal "
                "outputs (a wiring bug or a dead branch? mark it may_be_ignored = true if intended)",
                1.0, config.block_on_ignored_inputs, describe_case(base_case),
            ))  # fmt: skip
    return SensitivityResult(tuple(findings), tuple(checked), tuple(skipped))
