"""Comparison results are values: truthy when they passed, and they describe themselves."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator, Mapping

from harness.config import GateConfig, Tolerance

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class OutputComparison:
    output: str
    passed: bool
    max_abs: float
    mean_abs: float
    max_rel: float
    tolerance: Tolerance
    reason: str = ""

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        verdict = "PASSED" if self.passed else "FAILED"
        stats = f"max_abs={self.max_abs:.3g} mean_abs={self.mean_abs:.3g} max_rel={self.max_rel:.3g}"
        detail = f" | {self.reason}" if self.reason else ""
        return f"{verdict} | {self.output}: {stats} ({self.tolerance.describe()}){detail}"


@dataclass(frozen=True)
class ParityResult:
    """All outputs of one comparison of a candidate against a reference."""

    candidate: str
    reference: str
    outputs: tuple[OutputComparison, ...]
    context: str = ""
    failures: tuple[str, ...] = field(default=())

    def __bool__(self) -> bool:
        return not self.failures and all(self.outputs)

    def __iter__(self) -> Iterator[OutputComparison]:
        return iter(self.outputs)

    def __str__(self) -> str:
        head = "PASSED" if self else "FAILED"
        where = f" on {self.context}" if self.context else ""
        lines = [f"{head} | {self.candidate} vs {self.reference}{where}"]
        lines += [f"  {problem}" for problem in self.failures]
        lines += [f"  {comparison}" for comparison in self.outputs]
        return "\n".join(lines)


def compare_arrays(output: str, actual: np.ndarray, expected: np.ndarray, tolerance: Tolerance) -> OutputComparison:
    """Elementwise |actual - expected| <= atol + rtol*|expected|; mean |actual - expected| < mae,
    scaled by the mean |expected| where that exceeds 1; identical shapes, dtypes, NaN/Inf positions."""
    import numpy as np

    def failed(reason: str, max_abs: float = float("inf")) -> OutputComparison:
        return OutputComparison(output, False, max_abs, float("inf"), float("inf"), tolerance, reason)

    if actual.shape != expected.shape:
        return failed(f"shape {actual.shape} != reference {expected.shape}")
    if actual.dtype != expected.dtype:
        return failed(f"dtype {actual.dtype} != reference {expected.dtype}")
    if actual.dtype.kind not in "fc":
        mismatched = int(np.count_nonzero(actual != expected))
        ok = mismatched == 0
        return OutputComparison(
            output, ok, float(mismatched), float(mismatched) / max(actual.size, 1), 0.0, tolerance,
            "" if ok else f"{mismatched} of {actual.size} values differ",
        )  # fmt: skip
    a, e = actual.astype(np.float64), expected.astype(np.float64)
    if not np.array_equal(np.isnan(a), np.isnan(e)):
        return failed(f"NaN at different positions ({int(np.isnan(a).sum())} vs {int(np.isnan(e).sum())})")
    inf_a, inf_e = np.where(np.isinf(a), np.sign(a), 0), np.where(np.isinf(e), np.sign(e), 0)
    if not np.array_equal(inf_a, inf_e):
        return failed("Inf at different positions or with different signs")
    finite = np.isfinite(e)
    if not finite.any():
        return OutputComparison(output, True, 0.0, 0.0, 0.0, tolerance)
    diff = np.abs(a[finite] - e[finite])
    magnitude = np.abs(e[finite])
    max_abs, mean_abs = float(diff.max()), float(diff.mean())
    max_rel = float((diff / np.maximum(magnitude, np.finfo(np.float32).tiny)).max())
    over = diff > tolerance.atol + tolerance.rtol * magnitude
    reasons = []
    if over.any():
        worst = int(np.argmax(diff - tolerance.rtol * magnitude))
        reasons.append(
            f"{int(over.sum())} of {diff.size} values exceed atol+rtol*|ref|; worst "
            f"{a[finite][worst]:.9g} vs reference {e[finite][worst]:.9g}"
        )
    # The MAE bound is absolute for outputs of magnitude <= 1 (the original design's criterion) and
    # scales with larger outputs: 1e-5 on values of 300 would demand precision fp32 cannot hold.
    mae_bound = tolerance.mae * max(1.0, float(magnitude.mean()))
    if not mean_abs < mae_bound:
        reasons.append(f"mean abs error {mean_abs:.3g} >= {mae_bound:.3g}")
    return OutputComparison(output, not reasons, max_abs, mean_abs, max_rel, tolerance, "; ".join(reasons))


def compare_outputs(
    actual: Mapping[str, np.ndarray],
    expected: Mapping[str, np.ndarray],
    config: GateConfig,
    *,
    candidate: str,
    reference: str,
    context: str = "",
    tolerances: Mapping[str, Tolerance] | None = None,
) -> ParityResult:
    failures = []
    if list(actual) != list(expected):
        failures.append(f"outputs {list(actual)} != reference outputs {list(expected)}")
    comparisons = tuple(
        compare_arrays(name, actual[name], expected[name], (tolerances or {}).get(name, config.tolerance_for(name)))
        for name in expected
        if name in actual
    )
    return ParityResult(candidate, reference, comparisons, context, tuple(failures))
