"""How a candidate's outputs are judged, by its precision.

* fp32 candidates: the plain export's parity rule, unchanged (harness/checks/parity.py): within
  ``noise_factor`` times PyTorch fp32's own error against float64.
* Reduced precision (fp16, bf16) without a task budget: within ``noise_factor`` times PyTorch's
  own error at that precision (autocast fp16/bf16 against float64). The same rule one precision
  down: an ONNX fp16 model may be as wrong as PyTorch fp16 is, times the factor, no more.
* With a task budget (``[candidates.budget]``), reduced-precision candidates are held to it
  instead: a per-sample metric of the candidate against PyTorch fp32. int8 has no PyTorch
  reference precision, so an int8 candidate needs a budget to be judged at all.

Every judgement reports the worst error in units of its tolerance: at most 1 passes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from harness.compare.rule import slack_for
from harness.runtime.runners import Runner, output_list

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

    from harness.compare.rule import ParityResult
    from harness.core.candidate_settings import TaskBudget

EARTH_RADIUS_M = 6_371_008.8  # mean Earth radius (IUGG)
AUTOCAST_DTYPES = {"fp16": "float16", "bf16": "bfloat16"}


@dataclass(frozen=True)
class Judgement:
    """One candidate's outputs on one input, judged against its tolerance."""

    candidate: str
    passed: bool
    units: float  # worst error in units of the tolerance: <= 1 passes
    tolerance: str
    details: tuple[str, ...] = ()
    context: str = ""

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        head = "PASSED" if self.passed else "FAILED"
        where = f" on {self.context}" if self.context else ""
        lines = [f"{head} | candidate {self.candidate}: worst error {self.units:.3g}x its tolerance ({self.tolerance}){where}"]
        return "\n".join(lines + [f"  {line}" for line in self.details])


def parity_units(result: ParityResult) -> float:
    """The worst error of an fp32 parity result in units of its bound: the noise check's
    ``candidate_max / bound`` where it ran, and the fixed bound's ratio. A failure that no ratio
    measures (NaN/Inf, the mean bound, a missing output) counts as infinitely far."""
    if result.failures:
        return math.inf
    units = [n.candidate_max / n.bound if n.bound > 0 else (0.0 if n.candidate_max == 0 else math.inf)
             for n in result.noise if not n.waived]
    noise_judged = {n.output for n in result.noise}
    for comparison in result.outputs:
        if not comparison.passed:
            units.append(comparison.bound_ratio if comparison.bound_ratio > 1 else math.inf)
        elif comparison.output not in noise_judged:
            units.append(comparison.bound_ratio)
    return max(units, default=0.0)


def from_parity(candidate: str, result: ParityResult, tolerance: str) -> Judgement:
    details = tuple(str(result).splitlines()[1:]) if not result else ()
    return Judgement(candidate, bool(result), parity_units(result), tolerance, details, result.context)


# --- task metrics -----------------------------------------------------------------------------


def _per_sample(values: np.ndarray) -> np.ndarray:
    import numpy as np

    return values.reshape(values.shape[0], -1).astype(np.float64) if values.ndim else values.reshape(1, 1).astype(np.float64)


def haversine_m(candidate: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Great-circle distance in metres between (lat, lon) pairs in degrees, last axis of size 2."""
    import numpy as np

    a = np.radians(candidate.reshape(-1, 2).astype(np.float64))
    b = np.radians(reference.reshape(-1, 2).astype(np.float64))
    dlat, dlon = a[:, 0] - b[:, 0], a[:, 1] - b[:, 1]
    h = np.sin(dlat / 2) ** 2 + np.cos(a[:, 0]) * np.cos(b[:, 0]) * np.sin(dlon / 2) ** 2
    return 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))


def metric_value(
    metric: str, candidate: np.ndarray, reference: np.ndarray, custom: Callable[..., Any] | None,
    *, higher_is_better: bool = False,
) -> float:
    """The budget's metric over a batch, worst sample first (top1: the share that agrees). A custom
    metric returns one number or one per sample; ``higher_is_better`` says which end is worst."""
    import numpy as np

    if custom is not None:
        # A metric may return one error per sample: the worst counts (the lowest where higher is better).
        values = np.asarray(custom(candidate, reference), np.float64).ravel()
        if values.size == 0:
            raise ValueError("the custom metric returned no value")
        return float(values.min() if higher_is_better else values.max())
    if metric == "haversine_m":
        if candidate.shape[-1] != 2:
            raise ValueError(f"haversine_m needs (lat, lon) pairs on the last axis, got shape {candidate.shape}")
        return float(haversine_m(candidate, reference).max(initial=0.0))
    c, r = _per_sample(candidate), _per_sample(reference)
    if metric == "max_abs":
        return float(np.abs(c - r).max(initial=0.0))
    if metric == "relative_l2":
        norms = np.maximum(np.linalg.norm(r, axis=1), np.finfo(np.float32).tiny)
        return float((np.linalg.norm(c - r, axis=1) / norms).max(initial=0.0))
    if metric == "cosine":
        norms = np.maximum(np.linalg.norm(c, axis=1) * np.linalg.norm(r, axis=1), np.finfo(np.float64).tiny)
        return float(((c * r).sum(axis=1) / norms).min(initial=1.0))
    if metric == "top1":
        return float((c.argmax(axis=1) == r.argmax(axis=1)).mean())
    raise ValueError(f"unknown metric {metric!r}")


def budget_units(budget: TaskBudget, value: float) -> float:
    if budget.higher_is_better:
        miss, room = 1.0 - value, 1.0 - budget.limit
    else:
        miss, room = value, budget.limit
    if room <= 0:
        return 0.0 if miss <= 0 else math.inf
    return max(miss, 0.0) / room


def judge_budget(
    candidate: str, budget: TaskBudget, actual: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray],
    custom: Callable[..., Any] | None, context: str = "",
) -> Judgement:
    """``budget``'s metric of ``actual`` against ``expected`` (PyTorch fp32, or the parts of a batch)."""
    import numpy as np

    a, e = actual[budget.output], expected[budget.output]
    if a.shape != e.shape:
        return Judgement(candidate, False, math.inf, budget.describe(), (f"shape {a.shape} != reference {e.shape}",), context)
    stray = int(np.count_nonzero(~np.isfinite(a) & np.isfinite(e)))
    if stray:
        return Judgement(candidate, False, math.inf, budget.describe(),
                         (f"{budget.output}: NaN/Inf in {stray} values where PyTorch is finite",), context)
    finite = np.isfinite(e).all(axis=tuple(range(1, e.ndim))) if e.ndim > 1 else np.isfinite(e)
    if not finite.all():  # samples where PyTorch itself is not finite say nothing about the candidate
        a, e = a[finite], e[finite]
    value = metric_value(budget.metric, a, e, custom, higher_is_better=budget.higher_is_better) if a.size else (0.0 if not budget.higher_is_better else 1.0)
    units = budget_units(budget, value)
    detail = f"{budget.output}: {budget.metric} {value:.6g} (limit {budget.limit:g})"
    return Judgement(candidate, units <= 1.0, units, budget.describe(), (detail,), context)


# --- PyTorch at reduced precision: the floor for fp16 / bf16 candidates ------------------------


class AutocastRunner(Runner):
    """PyTorch eager under CPU autocast at ``precision`` (fp16 or bf16), outputs in fp32: what
    PyTorch itself gets at that precision."""

    def __init__(self, model: nn.Module, input_names: Sequence[str], output_names: Sequence[str], precision: str) -> None:
        super().__init__(input_names, output_names)
        self.model = model.eval()
        self.precision = precision
        self.name = f"torch-cpu-autocast-{AUTOCAST_DTYPES[precision]}"

    def infer_impl(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        import torch

        tensors = [torch.from_numpy(feeds[name]) for name in self.input_names]
        dtype = getattr(torch, AUTOCAST_DTYPES[self.precision])
        with torch.inference_mode(), torch.autocast("cpu", dtype=dtype):
            result = self.model(*tensors)
        return [t.detach().float().numpy() for t in output_list(result, self.output_names)]


def judge_floor(
    candidate: str, actual: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray],
    lowered: Mapping[str, np.ndarray], exact: Mapping[str, np.ndarray], factors: Mapping[str, float],
    precision: str, context: str = "",
) -> Judgement:
    """Each output of ``actual`` within ``factor`` times PyTorch's error at ``precision``
    (``lowered``, autocast) against float64 (``exact``), measured from ``reference`` (float64 for
    parity, the parts of a batch for batch consistency). Where all runs are finite."""
    import numpy as np

    worst, details = 0.0, []
    for name, factor in factors.items():
        a, r, low, x = (v[name].astype(np.float64) for v in (actual, reference, lowered, exact))
        if a.shape != r.shape:
            return Judgement(candidate, False, math.inf, "noise floor", (f"{name}: shape {a.shape} != {r.shape}",), context)
        stray = int(np.count_nonzero(~np.isfinite(a) & np.isfinite(x)))
        if stray:
            worst = math.inf
            details.append(f"{name}: NaN/Inf in {stray} values where float64 is finite")
            continue
        finite = np.isfinite(a) & np.isfinite(r) & np.isfinite(low) & np.isfinite(x)
        if not finite.any():
            continue
        floor = float(np.abs(low[finite] - x[finite]).max())
        error = float(np.abs(a[finite] - r[finite]).max())
        bound = factor * max(floor, slack_for(x[finite]))
        units = error / bound if bound > 0 else (0.0 if error == 0 else math.inf)
        worst = max(worst, units)
        details.append(f"{name}: max error {error:.3g}, PyTorch {precision} error {floor:.3g}, allowed {factor:g}x")
    tolerance = f"{max(factors.values(), default=0):g}x PyTorch {precision} (autocast) error vs float64"
    return Judgement(candidate, worst <= 1.0, worst, tolerance, tuple(details), context)
