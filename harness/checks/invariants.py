"""Invariants: properties the outputs must hold for any input, declared as [[invariants]]."""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.checks.declared import declare_check, with_invariants
from harness.checks.result import CheckResult
from harness.core.inputs import InputCase, describe_case

if TYPE_CHECKING:
    from harness.core.config import GateConfig
    from harness.runtime.runners import OrtRunner


CHECK = declare_check("invariants", required=with_invariants, order=70)


def check_invariants(case: InputCase, config: GateConfig, runner: OrtRunner) -> CheckResult:
    """Every declared invariant holds on every value ``runner`` gives for ``case``."""
    import numpy as np

    outputs = runner.infer(case.materialize(config))
    problems = []
    for invariant in config.invariants:
        values = outputs[invariant.output].astype(np.float64)
        low = -np.inf if invariant.min is None else invariant.min
        high = np.inf if invariant.max is None else invariant.max
        broken = ~((values >= low) & (values <= high))
        if broken.any():
            problems.append(
                f"{invariant.describe()} is broken by {int(broken.sum())} of {values.size} values "
                f"(e.g. {values[broken][0]:.6g})"
            )
    return CheckResult(
        "invariants", f"{len(config.invariants)} declared invariant(s) hold", tuple(problems), describe_case(case)
    )
