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


FP32_EPS = 2.0**-23


@dataclass(frozen=True)
class NoiseComparison:
    """The candidate's error against an fp64 reference, measured in units of PyTorch's own fp32
    error against that reference: rounding stays within a small multiple, defects do not."""

    output: str
    passed: bool
    floor_max: float  # max |PyTorch fp32 - fp64|
    floor_mean: float
    candidate_max: float  # max |candidate - fp64|
    candidate_mean: float
    factor: float
    slack: float  # a few fp32 ulps of the output's magnitude, for floors that are exactly 0

    @property
    def ratio(self) -> float:
        if self.floor_max > 0:
            return self.candidate_max / self.floor_max
        return 0.0 if self.candidate_max == 0 else float("inf")

    @property
    def bound(self) -> float:
        return self.factor * self.floor_max + self.slack

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        verdict = "PASSED" if self.passed else "FAILED"
        return (
            f"{verdict} | {self.output}: ONNX error is {self.ratio:.3g}x PyTorch's own fp32 noise "
            f"(max {self.candidate_max:.3g} vs {self.floor_max:.3g}; allowed {self.factor:g}x + {self.slack:.2g})"
        )


def compare_noise(
    output: str, candidate: np.ndarray, reference32: np.ndarray, reference64: np.ndarray, factor: float
) -> NoiseComparison:
    import numpy as np

    finite = np.isfinite(reference64) & np.isfinite(candidate) & np.isfinite(reference32)
    exact = reference64[finite]
    if exact.size == 0:
        return NoiseComparison(output, True, 0.0, 0.0, 0.0, 0.0, factor, 0.0)
    floor = np.abs(reference32[finite].astype(np.float64) - exact)
    error = np.abs(candidate[finite].astype(np.float64) - exact)
    slack = 4 * FP32_EPS * max(float(np.abs(exact).max()), float(np.finfo(np.float32).tiny))
    candidate_max, floor_max = float(error.max()), float(floor.max())
    passed = candidate_max <= factor * floor_max + slack
    return NoiseComparison(
        output, passed, floor_max, float(floor.mean()), candidate_max, float(error.mean()), factor, slack
    )


@dataclass(frozen=True)
class ParityResult:
    """All outputs of one comparison of a candidate against a reference."""

    candidate: str
    reference: str
    outputs: tuple[OutputComparison, ...]
    context: str = ""
    failures: tuple[str, ...] = field(default=())
    noise: tuple[NoiseComparison, ...] = field(default=())

    def __bool__(self) -> bool:
        return not self.failures and all(self.outputs) and all(self.noise)

    def with_noise(self, noise: tuple[NoiseComparison, ...]) -> ParityResult:
        return ParityResult(self.candidate, self.reference, self.outputs, self.context, self.failures, noise)

    def __iter__(self) -> Iterator[OutputComparison]:
        return iter(self.outputs)

    def __str__(self) -> str:
        head = "PASSED" if self else "FAILED"
        where = f" on {self.context}" if self.context else ""
        lines = [f"{head} | {self.candidate} vs {self.reference}{where}"]
        lines += [f"  {problem}" for problem in self.failures]
        lines += [f"  {comparison}" for comparison in self.outputs]
        lines += [f"  {comparison}" for comparison in self.noise]
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
        excess = diff - tolerance.rtol * magnitude
        worst = int(np.argmax(excess))
        index = tuple(int(i) for i in np.argwhere(finite)[worst])
        relative = diff[worst] / max(magnitude[worst], np.finfo(np.float32).tiny)
        reasons.append(
            f"{int(over.sum())} of {diff.size} values exceed atol+rtol*|ref|; worst at {index}: "
            f"{a[finite][worst]:.9g} vs reference {e[finite][worst]:.9g} "
            f"(abs error {diff[worst]:.3g}, rel error {relative:.3g})"
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
