"""Systematic error: a bias consistent across values and examples, which the per-value noise check
can miss when each value's error stays within ``noise_factor`` times PyTorch's own.

Rounding noise is unbiased: over thousands of values its mean is near zero. An export that scales
an output by (1 + 2.5e-6), uses a wrong constant or epsilon, or computes a branch in fp16 moves
every value the same way. The check pools a fixed sample of input cases (one per input family and
pinned batch size), measures each value's signed error against float64 in units of PyTorch fp32's
own error on that example (its rms, at least one ulp of the example's rms value), and asks, per
output, two questions of the mean: is it consistent (far beyond its standard error), and is it
clearly larger than PyTorch fp32's own bias and than PyTorch's noise itself? Both as an additive
offset and as a scale (the error times the sign of the value).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable, Mapping, Sequence

from harness.checks.parity import degenerate_inputs, keep_valid_positions
from harness.compare.rule import FP32_EPS
from harness.core.inputs import FAMILIES, InputCase

if TYPE_CHECKING:
    import numpy as np

    from harness.core.config import GateConfig
    from harness.runtime.case_runs import CaseRuns

# The mean signed error must exceed this many PyTorch fp32 rms errors (its noise), this many
# times PyTorch's own mean signed error, and this many standard errors of the mean.
BIAS_FACTOR = 4.0
CONSISTENCY = 6.0


@dataclass(frozen=True)
class BiasResult:
    output: str
    passed: bool
    values: int
    kind: str  # "scale" or "offset": the larger of the two, in noise units
    bias: float  # ONNX Runtime's mean signed error, in PyTorch fp32 rms errors
    torch_bias: float  # PyTorch fp32's own, in the same units
    z: float  # bias / its standard error
    relative: float  # for "scale": the least-squares relative scale of the error, e.g. 2.5e-6

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        verdict = "PASSED" if self.passed else "FAILED"
        size = f" (about {self.relative:+.2g} relative)" if self.kind == "scale" else ""
        return (
            f"{verdict} | {self.output}: systematic {self.kind} error {self.bias:+.3g}x PyTorch's fp32 noise{size} "
            f"over {self.values} values, {self.z:.3g} standard errors from zero; PyTorch's own bias "
            f"{self.torch_bias:+.3g}x (blocks above {BIAS_FACTOR:g}x both, {CONSISTENCY:g} standard errors)"
        )


@dataclass
class _Pool:
    offset_onnx: list[np.ndarray] = field(default_factory=list)
    offset_torch: list[np.ndarray] = field(default_factory=list)
    scale_onnx: list[np.ndarray] = field(default_factory=list)
    scale_torch: list[np.ndarray] = field(default_factory=list)
    relative: list[np.ndarray] = field(default_factory=list)  # per example: sum(d*x), sum(x*x)


def _judge(output: str, kind: str, onnx: np.ndarray, torch: np.ndarray, relative: float) -> BiasResult:
    import numpy as np

    n = onnx.size
    bias, torch_bias = float(onnx.mean()), float(torch.mean())
    spread = float(onnx.std()) / np.sqrt(n) if n > 1 else float("inf")
    z = abs(bias) / spread if spread > 0 else (float("inf") if bias else 0.0)
    passed = not (abs(bias) > BIAS_FACTOR * max(abs(torch_bias), 1.0) and z > CONSISTENCY)
    return BiasResult(output, passed, n, kind, bias, torch_bias, z, relative)


def pooled_bias(
    output: str, examples: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]]
) -> BiasResult | None:
    """The bias check for one output over ``examples`` of (ONNX Runtime, PyTorch fp32, float64)
    arrays; None when no example has a finite value to judge."""
    import numpy as np

    pool = _Pool()
    for candidate, reference32, reference64 in examples:
        if candidate.dtype.kind not in "fc" or candidate.shape != reference64.shape:
            continue
        finite = np.isfinite(candidate) & np.isfinite(reference32) & np.isfinite(reference64)
        x = reference64[finite].astype(np.float64)
        if x.size == 0:
            continue
        d = candidate[finite].astype(np.float64) - x
        f = reference32[finite].astype(np.float64) - x
        # PyTorch's own noise on this example: its rms error, at least one ulp of the rms value.
        noise = max(float(np.sqrt(np.mean(f**2))), FP32_EPS * float(np.sqrt(np.mean(x**2))), float(np.finfo(np.float32).tiny))
        sign = np.sign(x)
        pool.offset_onnx.append(d / noise)
        pool.offset_torch.append(f / noise)
        pool.scale_onnx.append(d * sign / noise)
        pool.scale_torch.append(f * sign / noise)
        pool.relative.append(np.array([float(np.dot(d, x)), float(np.dot(x, x))]))
    if not pool.offset_onnx:
        return None
    # The least-squares scale: sum(d*x) / sum(x*x), which values near zero cannot throw off.
    moments = np.sum(pool.relative, axis=0)
    relative = float(moments[0] / moments[1]) if moments[1] > 0 else 0.0
    offset = _judge(output, "offset", np.concatenate(pool.offset_onnx), np.concatenate(pool.offset_torch), 0.0)
    scale = _judge(output, "scale", np.concatenate(pool.scale_onnx), np.concatenate(pool.scale_torch), relative)
    failed = [r for r in (scale, offset) if not r]
    if failed:
        return max(failed, key=lambda r: abs(r.bias))
    return max((scale, offset), key=lambda r: abs(r.bias))


def bias_cases(config: GateConfig, sizes: Sequence[Mapping[str, int]]) -> list[InputCase]:
    """The check's fixed sample: one case per input family and pinned batch size (``sizes``, at the
    trace sizes), skipping degenerate (constant) inputs, where PyTorch is exact by luck."""
    cases = [
        InputCase(family, at, seed=index)
        for index, (family, at) in enumerate((f, s) for f in FAMILIES for s in sizes)
    ]  # fmt: skip
    return [case for case in cases if not degenerate_inputs(case.materialize(config))]


def check_bias(
    config: GateConfig, outputs: Sequence[str], cases: Sequence[InputCase], runs: Callable[[InputCase], CaseRuns]
) -> list[BiasResult] | None:
    """The check per output of ``outputs`` over ``cases``, each case's ``runs`` read once; None
    when a case has no float64 run."""
    examples: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {name: [] for name in outputs}
    for case in cases:
        run = runs(case)
        if run.torch64 is None:
            return None
        # Padded positions of padded_outputs mean nothing: no bias is measured there.
        kept, _, _ = keep_valid_positions(config, run.feeds, run.onnxruntime, run.torch32, run.torch64)
        actual, expected, exact = kept
        assert actual is not None and expected is not None and exact is not None
        for name in outputs:
            examples[name].append((actual[name], expected[name], exact[name]))
    return [result for name in outputs if (result := pooled_bias(name, examples[name])) is not None]
