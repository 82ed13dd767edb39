"""The parity rule: a runtime's outputs against PyTorch's, judged per output, as pure functions
on arrays and a Tolerance. (Not `onnx-gate compare`, which compares benchmark runs:
harness/bench/compare.py.) The parity check (harness/checks/parity.py) and every other judge read it.

Comparison results are values: truthy when they passed, and they describe themselves.

How parity is judged, per output and per input case, when a float64 run of the model exists:

* The noise check is primary. ONNX Runtime's error against float64 must stay within
  ``noise_factor`` times PyTorch fp32's own error against float64 (counted as at least two ulps
  of the output's magnitude). It scales with the model and the input, so it holds at any
  magnitude, in or out of the declared range. It holds at every scale within the output too: the
  values at most 1/256, 1/256**2, ... of the largest are judged again as a set of their own
  (``scale_sets``, while a set holds 256 values), so 0-1 scores beside pixel coordinates in one
  tensor are judged against their own noise, not the coordinates'. A small-scale set blocks only
  where its error also exceeds PyTorch's worst error anywhere in the output: small values made by
  cancellation carry the large terms' rounding, which PyTorch can miss by luck.
* The fixed bound (atol + rtol*|ref| elementwise, MAE on average) only blocks where it means
  something: on outputs where PyTorch fp32's worst error, in units of each value's bound, is at
  most 1/``noise_factor`` (at least 1/4) on this input, i.e. where PyTorch's own error is well
  inside the bound and an export ``noise_factor`` times less accurate would meet it too; and only
  where ONNX Runtime is off by more than the bound from PyTorch *and* from float64. Where PyTorch fp32
  itself misses the bound, no fp32 answer can meet it; the gate reports that as a finding about
  the model ("unstable") instead of blaming the export. The fixed bound then judges only the other
  values, with its headroom taken from them. Where at least 1% of the values are unstable, the
  noise check reports without blocking that output on that input: PyTorch's own fp32 answer
  means little there. ``block_on_unstable`` makes the finding block.
* NaN/Inf: ONNX Runtime producing a non-finite value where PyTorch does not always blocks.
  PyTorch producing one itself is a finding about the model ("non_finite"), blocking unless the
  config allows it; ONNX Runtime must then agree with PyTorch on those positions.

Without a float64 run (a model that cannot run in double precision, or ``noise_factor = 0``) the
fixed bound judges every element, as a plain atol/rtol validator would.
"""


from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Iterator, Mapping

from harness.core.config import GateConfig, Tolerance

if TYPE_CHECKING:
    import numpy as np

FP32_EPS = 2.0**-23
# A noise factor below 4 still leaves the fixed bound this much headroom over PyTorch fp32's own
# error, so that an ONNX Runtime as accurate as PyTorch cannot exceed it (|e2 - e1| <= 4|e1|).
WELL_CONDITIONED = 0.25
# Below this no export can reliably match fp32 noise: the smallest noise factor that means anything.
MIN_NOISE_FACTOR = 1 / WELL_CONDITIONED
# Without a float64 reference (no noise floor), a module's output is judged against a fixed
# relative bound of this many fp32 ulps of its largest value (`onnx-gate debug`).
NO_FLOOR_ULPS = 512
# The share of an output's values on which PyTorch fp32 must miss the fixed bound before the noise
# check stops blocking that output on that input: one stray value does not disarm it.
UNSTABLE_SHARE = 0.01


def exceeds_without_floor(max_abs: float, scale: float) -> bool:
    """Whether an error of ``max_abs`` on values up to ``scale`` exceeds the fixed bound that
    stands in for the noise floor where no float64 reference exists."""
    return max_abs > NO_FLOOR_ULPS * FP32_EPS * max(scale, 1.0)


@dataclass(frozen=True)
class OutputComparison:
    output: str
    passed: bool
    max_abs: float
    mean_abs: float
    max_rel: float
    tolerance: Tolerance
    reason: str = ""
    # Values the fixed bound could not judge because PyTorch fp32 itself is too far from float64.
    excused: int = 0
    # max |actual - expected| / (atol + rtol*|expected|): above 1, some value exceeds the bound.
    bound_ratio: float = 0.0
    # Integer and bool outputs are compared exactly: how many values, and how many differ.
    discrete: bool = False
    values: int = 0
    mismatched: int = 0

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        verdict = "PASSED" if self.passed else "FAILED"
        if self.discrete:
            detail = f" | {self.reason}" if self.reason else ""
            return f"{verdict} | {self.output}: compared exactly, {self.mismatched} of {self.values} values differ{detail}"
        stats = f"max_abs={self.max_abs:.3g} mean_abs={self.mean_abs:.3g} max_rel={self.max_rel:.3g}"
        excused = f"; {self.excused} ill-conditioned values judged by the noise floor only" if self.excused else ""
        detail = f" | {self.reason}" if self.reason else ""
        return f"{verdict} | {self.output}: {stats} ({self.tolerance.describe()}{excused}){detail}"


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
    # The least the floor counts as: PyTorch can be exact by luck (zeros in, a bias out) where any
    # other summation order is a few ulps off.
    slack: float
    # Values where PyTorch fp32 itself misses the fixed bound ("unstable" finding).
    unstable_values: int = 0
    # The model is unstable on a real share of the values: the check reports without blocking.
    waived: bool = False
    # Values the candidate makes NaN/Inf where PyTorch fp32 is finite: infinitely far off.
    nonfinite: int = 0
    # Which values these figures describe: "" for the whole output, else its small-scale part
    # (scale_sets) where that part came out worst.
    scale: str = ""
    waiver: str = ""  # why a waived check does not block, when not the model's instability

    @property
    def ratio(self) -> float:
        """Candidate error in units of PyTorch's own fp32 error."""
        if self.nonfinite:
            return float("inf")
        if self.floor_max > 0:
            return self.candidate_max / self.floor_max
        return 0.0 if self.candidate_max == 0 else float("inf")

    @property
    def judged_ratio(self) -> float:
        """The ratio as the check judges it: the floor never counts as less than the slack."""
        if self.nonfinite:
            return float("inf")
        scale = max(self.floor_max, self.slack)
        if scale > 0:
            return self.candidate_max / scale
        return 0.0 if self.candidate_max == 0 else float("inf")

    @property
    def bound(self) -> float:
        return self.factor * max(self.floor_max, self.slack)

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        verdict = "PASSED" if self.passed else "FAILED"
        if self.nonfinite:
            return f"{verdict} | {self.output}: ONNX Runtime gives NaN/Inf in {self.nonfinite} values where PyTorch is finite"
        output = f"{self.output} ({self.scale})" if self.scale else self.output
        return (
            f"{verdict} | {output}: ONNX error is {self.ratio:.3g}x PyTorch's own fp32 noise "
            f"(max {self.candidate_max:.3g} vs {self.floor_max:.3g}; allowed {self.factor:g}x, the floor at least "
            f"{self.slack:.2g})"
            + (f" | not blocking: {self.waiver or 'the model is unstable on this input'}" if self.waived else "")
        )


@dataclass(frozen=True)
class Finding:
    """Something the parity run learned about the *model*, not the export: PyTorch fp32 itself
    is far from float64 on this input ("unstable"), or yields NaN/Inf ("non_finite"); or about
    ONNX Runtime where PyTorch is exact by luck ("degenerate": constant inputs into normalisations,
    ONNX Runtime less accurate than PyTorch there yet within atol/rtol)."""

    kind: str  # "unstable", "non_finite", "degenerate" or "runtime" (the runtime's precision, judge_runtime)
    output: str
    message: str
    value: float  # unstable: PyTorch fp32's max deviation from float64; non_finite: the count
    blocking: bool
    context: str = ""
    in_range: bool = True

    def __str__(self) -> str:
        verdict = "FAILED" if self.blocking else "FINDING"
        where = f" on {self.context}" if self.context else ""
        scope = "" if self.in_range else " (input outside the declared range)"
        return f"{verdict} | {self.output}: {self.message}{where}{scope}"


FLOOR_ULPS = 2
# Scales within one output (scale_sets): each set holds the values at most 1/SCALE_STEP of the
# previous one's largest, and is judged only while it has MIN_SCALE_SET values.
SCALE_STEP = 256.0
MIN_SCALE_SET = 256
MAX_SCALE_STEPS = 6


def slack_for(exact: np.ndarray) -> float:
    """The least PyTorch's fp32 error counts as: FLOOR_ULPS ulps of the output's magnitude."""
    import numpy as np

    return FLOOR_ULPS * FP32_EPS * max(float(np.abs(exact).max(initial=0.0)), float(np.finfo(np.float32).tiny))


def scale_sets(exact: np.ndarray) -> list[tuple[np.ndarray, float]]:
    """The value sets judged at their own scale, each with its slack: the whole output, then the
    values at most 1/SCALE_STEP, 1/SCALE_STEP**2, ... of its largest magnitude, while a set holds
    at least MIN_SCALE_SET values. (compare_noise judges a small-scale set only where ONNX
    Runtime's error there also exceeds PyTorch's worst error anywhere in the output.)

    Within one output a small-scale slice (0-1 class scores beside pixel box coordinates) must
    not hide behind a large-scale one: measured against the whole output, its floor would be the
    large values' rounding error and their 2-ulp slack. Sets are nested and large, never single
    values: the floor is PyTorch's worst error over many values, so which value happens to round
    well in PyTorch does not decide the verdict (the per-element rule's failure on ResNet)."""
    import numpy as np

    magnitude = np.abs(exact)
    sets = [(np.ones(exact.shape, bool), slack_for(exact))]
    top = float(magnitude.max(initial=0.0))
    for step in range(1, MAX_SCALE_STEPS + 1):
        members = magnitude <= top / SCALE_STEP**step
        if int(np.count_nonzero(members)) < MIN_SCALE_SET:
            break
        sets.append((members, slack_for(exact[members])))
    return sets


def _describe_scale(members: np.ndarray, exact: np.ndarray) -> str:
    import numpy as np

    if members.all():
        return ""
    top = float(np.abs(exact[members]).max(initial=0.0))
    return f"the {int(members.sum())} of {members.size} values of magnitude <= {top:.3g}"


def compare_noise(
    output: str, candidate: np.ndarray, reference32: np.ndarray, reference64: np.ndarray, factor: float,
    *, scales: bool = True,
) -> NoiseComparison:
    """The noise check alone, on the elements where all three runs are finite, at every scale of
    ``scale_sets``; the worst set is the one reported. A NaN/Inf that only the candidate produces
    fails it outright (debug names the module where one first appears)."""
    import numpy as np

    nonfinite = int(np.count_nonzero(~np.isfinite(candidate) & np.isfinite(reference32)))
    finite = np.isfinite(reference64) & np.isfinite(candidate) & np.isfinite(reference32)
    exact = reference64[finite].astype(np.float64)
    if exact.size == 0:
        return NoiseComparison(output, not nonfinite, 0.0, 0.0, 0.0, 0.0, factor, 0.0, nonfinite=nonfinite)
    floor = np.abs(reference32[finite].astype(np.float64) - exact)
    error = np.abs(candidate[finite].astype(np.float64) - exact)
    worst: NoiseComparison | None = None
    whole_floor = float(floor.max())
    for members, slack in scale_sets(exact) if scales else [(np.ones(exact.shape, bool), slack_for(exact))]:
        candidate_max, floor_max = float(error[members].max()), float(floor[members].max())
        passed = candidate_max <= factor * max(floor_max, slack) and not nonfinite
        if not members.all() and candidate_max <= whole_floor:
            # Small values made by cancelling large terms carry the large terms' rounding error,
            # which PyTorch can miss by luck (constant inputs into BatchNorm on ResNet): an error
            # no larger than PyTorch's own somewhere in this output is not a small-scale defect.
            continue
        checked = NoiseComparison(
            output, passed, floor_max, float(floor[members].mean()), candidate_max, float(error[members].mean()),
            factor, slack, nonfinite=nonfinite, scale=_describe_scale(members, exact),
        )  # fmt: skip
        if worst is None or checked.judged_ratio > worst.judged_ratio:
            worst = checked
    assert worst is not None  # the whole output is always a set
    return worst


@dataclass(frozen=True)
class OutputJudgement:
    """Everything the gate concluded about one output on one input case."""

    comparison: OutputComparison
    noise: NoiseComparison | None = None
    findings: tuple[Finding, ...] = ()


def _nonfinite_mismatch(a: np.ndarray, e: np.ndarray, where: np.ndarray) -> int:
    """Positions in ``where`` at which ``a`` is not the same NaN / signed Inf as ``e``."""
    import numpy as np

    same_nan = np.isnan(a) & np.isnan(e)
    same_inf = np.isinf(a) & np.isinf(e) & (np.sign(a) == np.sign(e))
    return int(np.count_nonzero(where & ~(same_nan | same_inf)))


def judge_output(
    output: str,
    actual: np.ndarray,
    expected: np.ndarray,
    exact: np.ndarray | None,
    tolerance: Tolerance,
    *,
    context: str = "",
    in_range: bool = True,
    degenerate: str = "",
    runtime_only: bool = False,
    operator: str = "",
) -> OutputJudgement:
    """Judge ``actual`` (ONNX Runtime) against ``expected`` (PyTorch fp32) and, when given,
    ``exact`` (PyTorch fp64), by the rule in this module's docstring. ``degenerate`` names the
    input when it is degenerate ("constant inputs"; see ``degenerate_inputs``). ``runtime_only``:
    graph fidelity judges whether the graph is the model, so only the runtime's precision is
    judged here (``judge_runtime``); ``operator`` is the op that makes the output, for findings."""
    import numpy as np

    def failed(reason: str, max_abs: float = float("inf")) -> OutputJudgement:
        return OutputJudgement(OutputComparison(output, False, max_abs, float("inf"), float("inf"), tolerance, reason))

    if actual.shape != expected.shape:
        return failed(f"shape {actual.shape} != reference {expected.shape}")
    if actual.dtype != expected.dtype:
        return failed(f"dtype {actual.dtype} != reference {expected.dtype}")
    if actual.dtype.kind not in "fc":
        # Integer and bool outputs (argmax tags, masks, counts) have no rounding noise: exact.
        mismatched = int(np.count_nonzero(actual != expected))
        ok = mismatched == 0
        return OutputJudgement(OutputComparison(
            output, ok, float(mismatched), float(mismatched) / max(actual.size, 1), 0.0, tolerance,
            "" if ok else f"{mismatched} of {actual.size} values differ",
            discrete=True, values=int(actual.size), mismatched=mismatched,
        ))  # fmt: skip
    if exact is not None and exact.shape != expected.shape:
        exact = None

    a, e = actual.astype(np.float64), expected.astype(np.float64)
    x = exact.astype(np.float64) if exact is not None else None
    findings: list[Finding] = []
    reasons: list[str] = []

    # --- NaN / Inf --------------------------------------------------------------------------
    torch_nonfinite = ~np.isfinite(e)
    onnx_only = int(np.count_nonzero(~np.isfinite(a) & ~torch_nonfinite))
    if onnx_only:
        reasons.append(f"ONNX Runtime produces NaN/Inf in {onnx_only} of {a.size} values where PyTorch does not")
    if torch_nonfinite.any():
        count = int(torch_nonfinite.sum())
        # Where float64 is finite, fp32 overflowed: ONNX Runtime may well do better there.
        model_nonfinite = torch_nonfinite if x is None else torch_nonfinite & ~np.isfinite(x)
        findings.append(Finding(
            "non_finite", output,
            f"PyTorch itself produces NaN/Inf in {count} of {e.size} values",
            float(count), not tolerance.allow_non_finite, context, in_range,
        ))  # fmt: skip
        disagree = _nonfinite_mismatch(a, e, model_nonfinite)
        if disagree:
            reasons.append(f"ONNX Runtime disagrees with PyTorch's NaN/Inf in {disagree} values")

    finite = np.isfinite(a) & np.isfinite(e) & (np.isfinite(x) if x is not None else True)
    if not finite.any():
        comparison = OutputComparison(output, not reasons, 0.0, 0.0, 0.0, tolerance, "; ".join(reasons))
        return OutputJudgement(comparison, None, tuple(findings))
    a, e = a[finite], e[finite]
    diff = np.abs(a - e)
    magnitude = np.abs(e)
    bound = tolerance.atol + tolerance.rtol * magnitude
    max_abs, mean_abs = float(diff.max()), float(diff.mean())
    max_rel = float((diff / np.maximum(magnitude, np.finfo(np.float32).tiny)).max())
    # The MAE bound is absolute for outputs of magnitude <= 1 (the original design's criterion) and
    # scales with larger outputs: 1e-5 on values of 300 would demand precision fp32 cannot hold.
    mae_bound = tolerance.mae * max(1.0, float(magnitude.mean()))

    if x is not None and runtime_only:
        verdict = judge_runtime(
            output, a, e, x[finite], tolerance, operator=operator, context=context, in_range=in_range,
            positions=np.argwhere(finite),
        )  # fmt: skip
        comparison = replace(
            verdict.comparison, passed=verdict.comparison.passed and not reasons,
            reason="; ".join([*reasons, verdict.comparison.reason] if verdict.comparison.reason else reasons),
        )  # fmt: skip
        return OutputJudgement(comparison, verdict.noise, tuple(findings) + verdict.findings)
    noise = None
    if x is not None:
        x = x[finite]
        floor = np.abs(e - x)
        error = np.abs(a - x)
        # Values where PyTorch fp32 itself misses the fixed bound: no fp32 answer means much there,
        # so neither check judges them; every other value is judged by both.
        unstable_values = floor > bound
        stable = ~unstable_values
        beyond = int(np.count_nonzero(unstable_values))
        if beyond or not float(floor.mean()) < mae_bound:
            findings.append(Finding(
                "unstable", output,
                f"the model is numerically unstable here: PyTorch fp32 deviates from float64 by "
                f"{float(floor.max()):.3g} (beyond atol+rtol*|ref| in {beyond} of {floor.size} values, "
                f"mean {float(floor.mean()):.3g})",
                float(floor.max()), tolerance.block_on_unstable, context, in_range,
            ))  # fmt: skip
        slack = slack_for(x)
        # The fixed bound judges the output's stable values only where an ONNX Runtime
        # `noise_factor` times less accurate than PyTorch would still meet it, measured in units of
        # each value's own bound: there, exceeding the bound is a defect, not fp32 rounding. One
        # figure per scale set (scale_sets), not each value's own error: which value happens to
        # round well in PyTorch is chance, and would make the verdict chance too. Small values are
        # judged with their own slack, so the large ones' 2-ulp slack cannot disarm the bound for them.
        factor = max(tolerance.noise_factor, MIN_NOISE_FACTOR)
        judged = np.zeros(stable.shape, bool)
        for members, set_slack in scale_sets(x):
            pytorch_share = float((np.maximum(floor, set_slack) / bound)[members & stable].max(initial=0.0))
            if factor * pytorch_share <= 1.0:
                judged |= members & stable
        over = judged & (diff > bound) & (error > bound)
        excused = int(np.count_nonzero(~judged))
        mae_over = bool(stable.any()) and (
            factor * max(float(floor[stable].mean()), slack) <= mae_bound
            and not float(diff[stable].mean()) < mae_bound and not float(error[stable].mean()) < mae_bound
        )  # fmt: skip
        if tolerance.noise_factor > 0:
            # Over every value: PyTorch's worst error is the scale of fp32 noise on this input. A
            # model unstable on a real share of the values makes that scale meaningless, and the
            # noise check then reports without blocking (the finding blocks, if asked to).
            checked = compare_noise(output, a, e, x, tolerance.noise_factor)
            waived = not checked and beyond >= UNSTABLE_SHARE * floor.size
            noise = replace(checked, passed=bool(checked) or waived, unstable_values=beyond, waived=waived)
        if noise is not None and not noise and degenerate and not onnx_only:
            # Constant inputs into normalisations make PyTorch exact by luck, a floor no other
            # summation order reaches. Within the fixed bound on every value that is a finding,
            # not a defect; beyond it (or NaN) it still blocks.
            beyond_bound = stable & (diff > bound) & (error > bound)
            within = not beyond_bound.any() and (
                not stable.any() or float(diff[stable].mean()) < mae_bound or float(error[stable].mean()) < mae_bound
            )  # fmt: skip
            if within:
                findings.append(Finding(
                    "degenerate", output,
                    f"ONNX Runtime is less accurate than PyTorch on {degenerate}: {noise.judged_ratio:.3g}x "
                    f"PyTorch's error, within atol/rtol (worst {float((diff / bound)[stable].max(initial=0.0)):.2g} "
                    "of the bound)",
                    noise.judged_ratio, False, context, in_range,
                ))  # fmt: skip
                noise = replace(noise, passed=True, waived=True, waiver=f"within atol/rtol on {degenerate}")
    else:
        over = diff > bound
        excused = 0
        mae_over = not mean_abs < mae_bound
    if over.any():
        excess = np.where(over, diff - bound, -np.inf)
        worst = int(np.argmax(excess))
        index = tuple(int(i) for i in np.argwhere(finite)[worst])
        relative = diff[worst] / max(magnitude[worst], np.finfo(np.float32).tiny)
        reasons.append(
            f"{int(over.sum())} of {diff.size} values exceed atol+rtol*|ref|; worst at {index}: "
            f"{a[worst]:.9g} vs reference {e[worst]:.9g} "
            f"(abs error {diff[worst]:.3g}, rel error {relative:.3g})"
        )
    if mae_over:
        reasons.append(f"mean abs error {mean_abs:.3g} >= {mae_bound:.3g}")
    comparison = OutputComparison(
        output, not reasons, max_abs, mean_abs, max_rel, tolerance, "; ".join(reasons), excused,
        float((diff / bound).max()),
    )  # fmt: skip
    return OutputJudgement(comparison, noise, tuple(findings))


def judge_runtime(
    output: str,
    actual: np.ndarray,
    expected: np.ndarray,
    exact: np.ndarray,
    tolerance: Tolerance,
    *,
    operator: str = "",
    context: str = "",
    in_range: bool = True,
    positions: np.ndarray | None = None,
) -> OutputJudgement:
    """Runtime accuracy, where graph fidelity has established that the graph is the model:
    ONNX Runtime fp32 against float64 on finite values. It blocks only where the error exceeds
    both the fixed bound (atol + rtol*|ref| on some value, from PyTorch and from float64 alike, or
    the MAE) and ``noise_factor`` times PyTorch's own fp32 error at the output's scale. Exceeding
    one of them is how fp32 kernels differ (a sigmoid's tail, a value just above a ReLU's kink,
    constant inputs into a normalisation): a finding that names the operator, not a block."""
    import numpy as np

    diff, error, floor = np.abs(actual - expected), np.abs(actual - exact), np.abs(expected - exact)
    magnitude = np.abs(expected)
    bound = tolerance.atol + tolerance.rtol * magnitude
    mae_bound = tolerance.mae * max(1.0, float(magnitude.mean()))
    over = (diff > bound) & (error > bound)
    mae_over = not float(diff.mean()) < mae_bound and not float(error.mean()) < mae_bound
    fixed_failed = bool(over.any()) or mae_over
    noise = None
    if tolerance.noise_factor > 0:
        noise = compare_noise(output, actual, expected, exact, tolerance.noise_factor, scales=False)
    noise_failed = noise is not None and not noise
    blocked = fixed_failed and (noise is None or noise_failed)
    reasons = []
    if blocked and over.any():
        worst = int(np.argmax(np.where(over, diff - bound, -np.inf)))
        index = tuple(int(i) for i in positions[worst]) if positions is not None else (worst,)
        relative = diff[worst] / max(magnitude[worst], np.finfo(np.float32).tiny)
        reasons.append(
            f"{int(over.sum())} of {diff.size} values exceed atol+rtol*|ref|; worst at {index}: "
            f"{actual[worst]:.9g} vs reference {expected[worst]:.9g} "
            f"(abs error {diff[worst]:.3g}, rel error {relative:.3g})"
        )
    if blocked and mae_over:
        reasons.append(f"mean abs error {float(diff.mean()):.3g} >= {mae_bound:.3g}")
        if not over.any():  # every value within its own bound: still name the worst one
            worst = int(np.argmax(diff))
            index = tuple(int(i) for i in positions[worst]) if positions is not None else (worst,)
            relative = diff[worst] / max(magnitude[worst], np.finfo(np.float32).tiny)
            reasons.append(
                f"worst at {index}: {actual[worst]:.9g} vs reference {expected[worst]:.9g} "
                f"(abs error {diff[worst]:.3g}, rel error {relative:.3g})"
            )
    if blocked and noise is not None:
        reasons.append(f"and {noise.judged_ratio:.3g}x PyTorch's own fp32 noise")
    findings: tuple[Finding, ...] = ()
    unstable = int(np.count_nonzero(floor > bound))
    if unstable:
        findings += (Finding(
            "unstable", output,
            f"the model is numerically unstable here: PyTorch fp32 deviates from float64 by {float(floor.max()):.3g} "
            f"(beyond atol+rtol*|ref| in {unstable} of {floor.size} values)",
            float(floor.max()), tolerance.block_on_unstable, context, in_range,
        ),)  # fmt: skip
    # Judged at the output's scale; its small values are looked at too, for what a user should know.
    detail = compare_noise(output, actual, expected, exact, tolerance.noise_factor) if noise is not None else None
    if not blocked and (fixed_failed or noise_failed or (detail is not None and not detail)):
        message = _runtime_message(_runtime_name(operator), actual, expected, exact, over, detail, tolerance)
        ratio = detail.judged_ratio if detail is not None else float((diff / bound).max())
        findings += (Finding("runtime", output, message, ratio, False, context, in_range),)
    if noise is not None:
        waiver = "within atol/rtol: graph fidelity shows the graph is the model, so this is the runtime's precision"
        noise = replace(noise, passed=not blocked, waived=noise_failed and not blocked, waiver=waiver)
    comparison = OutputComparison(
        output, not blocked, float(diff.max()), float(diff.mean()),
        float((diff / np.maximum(magnitude, np.finfo(np.float32).tiny)).max()), tolerance, "; ".join(reasons),
        bound_ratio=float((diff / bound).max()),
    )  # fmt: skip
    return OutputJudgement(comparison, noise, findings)


def float64_cannot_matter(
    actual: np.ndarray, expected: np.ndarray, tolerance: Tolerance, *, runtime_only: bool = True
) -> bool:
    """Whether ONNX Runtime (``actual``) and PyTorch fp32 (``expected``) agree so closely on one
    output that no float64 run could change ``judge_runtime``'s verdict or raise its runtime
    finding, so the float64 run can be spared (it is half of a gate's time). With
    ``runtime_only=False`` the same for ``judge_output``'s whole rule, which judges where graph
    fidelity cannot: that rule also blocks on the mean error over the values PyTorch computes
    stably, a subset only float64 names, so every value's distance must stay below the mean's
    bound, and no subset's mean can reach it.

    ``judge_runtime`` blocks only where ONNX Runtime is beyond the fixed bound from PyTorch, so within
    it nothing blocks. Its noise checks pass, at every scale, where ONNX Runtime's error against
    float64 is at most ``noise_factor`` times max(PyTorch's, the slack); that error is at most
    PyTorch's error plus the distance between the two fp32 runs, so a distance within
    ``noise_factor - 1`` slacks passes them whatever float64 says. The scale sets and their slack
    are taken from PyTorch's values instead of float64's, with a factor of two each way to spare.
    What this cannot see is PyTorch's own error beyond the fixed bound, the "unstable" finding; a
    tolerance with ``block_on_unstable`` therefore always gets its float64 run (the caller's part)."""
    import numpy as np

    if actual.dtype.kind not in "fc":
        return True  # compared exactly
    if actual.shape != expected.shape:
        return False
    a, e = actual.astype(np.float64).ravel(), expected.astype(np.float64).ravel()
    if a.size == 0:
        return True
    if not (np.isfinite(a).all() and np.isfinite(e).all()):
        return False  # where PyTorch's fp32 overflowed, float64 says whether ONNX Runtime did better
    diff, magnitude = np.abs(a - e), np.abs(e)
    bound = tolerance.atol + tolerance.rtol * magnitude
    mae_bound = tolerance.mae * max(1.0, float(magnitude.mean()))
    if (diff > bound).any() or not float(diff.mean() if runtime_only else diff.max()) < mae_bound:
        return False
    if not tolerance.noise_factor:
        return True
    top = float(magnitude.max())
    for step in range(MAX_SCALE_STEPS + 1):
        threshold = top / SCALE_STEP**step
        members = magnitude <= (2 * threshold if step else threshold)
        if not members.any():
            break
        core = magnitude[magnitude <= threshold / 2] if step else magnitude
        slack = FLOOR_ULPS * FP32_EPS * max(float(core.max(initial=0.0)), float(np.finfo(np.float32).tiny)) / 2
        if float(diff[members].max()) > (tolerance.noise_factor - 1) * slack:
            return False
    return True


# Ops whose output error is their own kernel's: a finding can blame the op by name.
ELEMENTWISE_OPS = {
    "Sigmoid", "Tanh", "Relu", "LeakyRelu", "Elu", "Selu", "Gelu", "Erf", "Exp", "Log", "Softplus", "Softsign",
    "Softmax", "LogSoftmax", "HardSigmoid", "HardSwish", "Sqrt", "Reciprocal", "Pow", "Clip", "Mish",
}


def _runtime_name(operator: str) -> str:
    """``ONNX Runtime's Sigmoid`` where the output's own op is elementwise, else the op that makes it."""
    if operator in ELEMENTWISE_OPS:
        return f"ONNX Runtime's {operator}"
    return f"ONNX Runtime (output made by {operator})" if operator else "ONNX Runtime"


def _runtime_message(
    operator: str, actual: np.ndarray, expected: np.ndarray, exact: np.ndarray, over: np.ndarray,
    noise: NoiseComparison | None, tolerance: Tolerance,
) -> str:  # fmt: skip
    """What a user should know about the runtime's precision on this output, in one sentence."""
    import numpy as np

    if noise is None or noise:
        worst = float(np.abs(actual - exact)[over].max(initial=0.0))
        return (
            f"{operator}: {int(over.sum())} of {over.size} values beyond atol+rtol*|ref| "
            f"(worst {worst:.2g} absolute), within {tolerance.noise_factor:g}x PyTorch's fp32 noise at the output's scale"
        )
    magnitude = np.abs(exact)
    small = magnitude <= magnitude.max(initial=0.0) / SCALE_STEP
    small &= magnitude > np.finfo(np.float32).tiny
    error, floor = np.abs(actual - exact), np.abs(expected - exact)
    if small.any() and float(error[small].max()) > noise.factor * max(float(floor[small].max()), noise.slack / SCALE_STEP):
        relative = float((error[small] / magnitude[small]).max())
        pytorch = float((floor[small] / magnitude[small]).max())
        return (
            f"{operator}: up to {relative:.2g} relative error on values below "
            f"{float(magnitude[small].max()):.2g} ({float(error[small].max()):.2g} absolute; PyTorch fp32: "
            f"{pytorch:.2g} relative), within atol/rtol"
        )
    return (
        f"{operator}: {noise.judged_ratio:.3g}x PyTorch's fp32 noise (max {noise.candidate_max:.2g} "
        f"vs {noise.floor_max:.2g}), within atol/rtol"
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
    findings: tuple[Finding, ...] = field(default=())
    in_range: bool = True
    # Values at padded positions of outputs declared in padded_outputs: not compared.
    left_out: Mapping[str, int] = field(default_factory=dict)
    compared: Mapping[str, int] = field(default_factory=dict)  # values compared per output

    def __bool__(self) -> bool:
        return (
            not self.failures and all(self.outputs) and all(self.noise)
            and not any(f.blocking for f in self.findings)
        )  # fmt: skip

    def __iter__(self) -> Iterator[OutputComparison]:
        return iter(self.outputs)

    def __str__(self) -> str:
        head = "PASSED" if self else "FAILED"
        where = f" on {self.context}" if self.context else ""
        scope = "" if self.in_range else " [outside the declared input range]"
        lines = [f"{head} | {self.candidate} vs {self.reference}{where}{scope}"]
        lines += [f"  {problem}" for problem in self.failures]
        lines += [f"  {name}: {count} values at padded positions left out" for name, count in self.left_out.items() if count]
        lines += [f"  {comparison}" for comparison in self.outputs]
        lines += [f"  {comparison}" for comparison in self.noise]
        lines += [f"  {replace(finding, context='')}" for finding in self.findings]
        return "\n".join(lines)


def _output_check(actual: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray]) -> tuple[str, ...]:
    if list(actual) != list(expected):
        return (f"outputs {list(actual)} != reference outputs {list(expected)}",)
    return ()


def compare_outputs(
    actual: Mapping[str, np.ndarray],
    expected: Mapping[str, np.ndarray],
    config: GateConfig,
    *,
    candidate: str,
    reference: str,
    context: str = "",
    tolerances: Mapping[str, Tolerance] | None = None,
    exact: Mapping[str, np.ndarray] | None = None,
    in_range: bool = True,
    degenerate: str = "",
    runtime_only: bool = False,
    operators: Mapping[str, str] | None = None,
) -> ParityResult:
    """Judge every output of ``actual`` against ``expected`` (and ``exact``, the float64 run,
    when given) by the rule in this module's docstring."""
    judgements = [
        judge_output(
            name, actual[name], expected[name], (exact or {}).get(name),
            (tolerances or {}).get(name, config.tolerance_for(name)), context=context, in_range=in_range,
            degenerate=degenerate, runtime_only=runtime_only, operator=(operators or {}).get(name, ""),
        )  # fmt: skip
        for name in expected
        if name in actual
    ]
    return ParityResult(
        candidate, reference,
        tuple(j.comparison for j in judgements), context, _output_check(actual, expected),
        tuple(j.noise for j in judgements if j.noise is not None),
        tuple(f for j in judgements for f in j.findings), in_range,
    )  # fmt: skip


def for_inputs_outside_range(tolerance: Tolerance) -> Tolerance:
    """The tolerance for inputs outside the declared range: ``out_of_range_scale`` times looser (or
    stricter), with the noise factor never below the rule's own floor."""
    scale = tolerance.out_of_range_scale
    if scale == 1.0:
        return tolerance
    return replace(
        tolerance, atol=tolerance.atol * scale, rtol=tolerance.rtol * scale, mae=tolerance.mae * scale,
        # Below MIN_NOISE_FACTOR no export can reliably match fp32 noise: "stricter" stops there.
        noise_factor=max(tolerance.noise_factor * scale, MIN_NOISE_FACTOR) if tolerance.noise_factor else 0.0,
    )  # fmt: skip


def at_input_scale(tolerance: Tolerance, largest_input: float) -> Tolerance:
    """The runtime's fixed bound on a stress input whose largest value is ``largest_input``:
    atol and the MAE bound are at least one fp32 ulp at that magnitude; rtol stays. Where graph
    fidelity has shown the graph is the model, what is left to judge is the runtime's fp32
    kernels, whose absolute error on the values inside the graph grows with the inputs.
    ONNX Runtime's GRU computes a saturated update gate's sigmoid as 3.5e-8 where the true
    value is 0, an error within fp32 at the gate's scale of 1, and multiplies it into the state:
    fed a state of 1e4 (range [-1, 1]), a correct export's output is 3.5e-4 from PyTorch (0.3
    ulp at 1e4; 3.9e-5 at 1e3), 35x the in-range atol, on outputs no larger than 1. One ulp at
    1e4 is 1.2e-3: a probability off by 0.01 still blocks there, and so does NaN or Inf that only
    ONNX Runtime gives. Inside the range nothing changes."""
    floor = FP32_EPS * largest_input
    if floor <= tolerance.atol and floor <= tolerance.mae:
        return tolerance
    return replace(tolerance, atol=max(tolerance.atol, floor), mae=max(tolerance.mae, floor))
