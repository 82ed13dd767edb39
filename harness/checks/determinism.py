"""Determinism: one ONNX Runtime session gives the same bytes twice, and so does a fresh one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Mapping

from harness.checks.declared import declare_check
from harness.checks.result import CheckResult
from harness.core.inputs import InputCase, describe_case
from harness.runtime.export import example_feeds

if TYPE_CHECKING:
    import numpy as np

    from harness.core.config import GateConfig
    from harness.runtime.runners import OrtRunner


CHECK = declare_check("determinism", order=50)


def _differing(first: Mapping[str, np.ndarray], second: Mapping[str, np.ndarray]) -> list[str]:
    return [name for name in first if name not in second or first[name].tobytes() != second[name].tobytes()]


def check_repeatable(case: InputCase, config: GateConfig, runner: OrtRunner) -> CheckResult:
    """Two runs of ``runner`` on ``case`` are bitwise equal."""
    feeds = case.materialize(config)
    first, second = runner.infer(feeds), runner.infer(feeds)
    return CheckResult(
        "determinism", "two runs of one ONNX Runtime session are bitwise equal",
        tuple(f"{name}: two runs of one ONNX Runtime session differ" for name in _differing(first, second)),
        describe_case(case),
    )  # fmt: skip


def check_fresh_session(
    config: GateConfig, runner: OrtRunner, fresh: OrtRunner | Callable[[], OrtRunner], *, seed: int = 7
) -> CheckResult:
    """A second session (``fresh``) gives ``runner``'s bytes for the same inputs. ``fresh`` may be a
    function making the session once ``runner`` has run, so that a large model's first session can
    be released before the second loads (GateSession.renew_ort_runner)."""
    feeds = example_feeds(config, config.trace_sizes, seed=seed)
    original = runner.infer(feeds)
    again = (fresh if hasattr(fresh, "infer") else fresh()).infer(feeds)  # type: ignore[operator, union-attr]
    return CheckResult(
        "determinism", "a fresh ONNX Runtime session reproduces the outputs bitwise",
        tuple(
            f"{name}: a second ONNX Runtime session gives different bytes for the same inputs"
            for name in _differing(original, again)
        ),
        f"the example inputs at the trace sizes (seed={seed})",
    )  # fmt: skip
