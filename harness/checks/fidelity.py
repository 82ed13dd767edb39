"""Graph fidelity: is the exported graph the model? Asked in float64, with ONNX Runtime out of it.

The graph is evaluated by a reference evaluator in float64 (harness/runtime/graph64.py) and compared with
PyTorch's float64 run on the same inputs. Neither side has fp32 kernels in it, so what remains is:

* float64 rounding, amplified by the model's conditioning. PyTorch fp32's own error measures that
  amplification at fp32's precision; float64's is 2**-29 of it. ``FP64_SHARE`` (2**-9) allows
  2**20 times that, and never less than 2 fp32 ulps of the output's scale times 2**-9. The margin
  is wide because the two sides may use different algorithms: a LayerNorm's variance in one pass
  or two differs by 5e-10 on near-constant input, where PyTorch's fp32 error was only 1e-7;
* float32 storage of constants the exporter computed: a BatchNorm folded into a convolution, a
  fused scale, scalars such as GELU's 1/sqrt(2). Each was rounded once, by at most half an ulp.
  The graph is evaluated a second time with exactly those constants moved at random within half
  an ulp (``Evaluation.storage``); a faithful graph's error is of that size, and ``STORAGE_FACTOR``
  (16) allows for the chance of which way each rounding went.

Beyond that bound the graph computes something else: a changed epsilon, a weight off by a few
ppm, an fp16 leak, a wrong mask, a baked-in shape. Measured (docs/verdicts.md): faithful
exports stay within 0.01-0.5 of their bound, defects land at 10-10^8 times it.

Discrete outputs (argmax tags, masks) are not compared themselves: the float input of every
ArgMax, ArgMin and TopK node, the logits behind them, is judged against the value PyTorch passed
to the matching ``argmax``/``argmin``/``topk`` call. When the graph is not the model, the first
module whose float64 output leaves its bound is named, with its source line; modules that could
not be aligned are listed by name.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from harness.align.walk import Departure, first_departure
from harness.checks.declared import declare_check, unless_skipped
from harness.checks.parity import keep_valid_positions
from harness.compare.fidelity import FP64_SHARE, STORAGE_FACTOR, FidelityComparison, compare_fidelity
from harness.core.inputs import (
    DEGENERATE_FAMILIES, FAMILIES, SAMPLES, STRESS_FAMILIES, STRESS_MAGNITUDES, InputCase, describe_case,
    leaving_range,
)  # fmt: skip
from harness.core.samples import load_samples
from harness.runtime.case_runs import CaseRuns, run_case_in_float64

if TYPE_CHECKING:
    from harness.core.config import GateConfig
    from harness.runtime.graph64 import Graph64
    from harness.runtime.runners import TorchRunner

# Required unless it says, by skipping, why it could not judge (ops without a float64 reference,
# a model that cannot run in float64, a model over the size limit).
CHECK = declare_check("fidelity", required=unless_skipped("fidelity"), order=25)

# Above these the check is not run, saying why: the reference evaluator holds the weights in float64
# twice and is slower than ONNX Runtime by 10-100x.
MAX_PARAMETERS = 100_000_000
DISCRETE_OPS = ("ArgMax", "ArgMin", "TopK")


@dataclass(frozen=True)
class FidelityResult:
    """The check over its whole sample: truthy when every value on every case is within its bound."""

    cases: tuple[str, ...] = ()
    comparisons: tuple[FidelityComparison, ...] = ()
    not_judged: str = ""  # why it could not judge; not a failure
    departure: Departure | None = None
    unaligned: Mapping[str, str] = field(default_factory=dict)  # module or node -> why not
    derived_constants: int = 0
    seconds: float = 0.0

    @property
    def failures(self) -> tuple[FidelityComparison, ...]:
        return tuple(c for c in self.comparisons if not c)

    @property
    def worst(self) -> FidelityComparison | None:
        return max(self.comparisons, key=lambda c: c.ratio, default=None)

    def __bool__(self) -> bool:
        return not self.failures

    def __str__(self) -> str:
        if self.not_judged:
            return f"graph fidelity: not judged ({self.not_judged})"
        failures = self.failures
        if failures:
            first = max(failures, key=lambda c: c.ratio)
            lines = [f"{first} on {first.case} ({len(failures)} of {len(self.comparisons)} values over their bound)"]
            if self.departure is not None:
                lines.append(f"  {self.departure}")
            if self.unaligned:
                lines.append(f"  not aligned: {', '.join(sorted(self.unaligned))}")
            return "\n".join(lines)
        worst = self.worst
        detail = f"; worst {worst.value} at {worst.ratio:.2g} of its bound" if worst else ""
        return f"PASSED | the graph is the model: {len(self.comparisons)} values on {len(self.cases)} cases{detail}"

    def to_dict(self) -> dict[str, Any]:
        worst = self.worst
        return {
            "status": "not judged" if self.not_judged else "passed" if self else "failed",
            "reason": self.not_judged or None,
            "cases": list(self.cases),
            "worst": worst.to_dict() if worst else None,
            "failures": [c.to_dict() for c in self.failures],
            "departure": None if self.departure is None else {
                "module": self.departure.module, "class": self.departure.cls, "source": self.departure.source,
                "case": self.departure.case, **self.departure.comparison.to_dict(),
            },
            "unaligned": dict(self.unaligned),
            "derived_constants": self.derived_constants,
            "bound": {"fp64_share": FP64_SHARE, "storage_factor": STORAGE_FACTOR},
            "seconds": round(self.seconds, 2),
            "summary": str(self).splitlines()[0],
        }  # fmt: skip


def fidelity_cases(config: GateConfig, batch_dim: str | None, batches: Sequence[int]) -> list[InputCase]:
    """Every input family but the degenerate ones (stress inputs, at the largest size the property
    tests draw, and ``quiet`` included: the graph must be the model far outside the range, where
    parity judges only the runtime and at the inputs' scale, and on near-silence) with the pinned ``batches``
    in turn; padding as the families draw it; every sample as it is; and the smallest and largest
    declared size of every dimension.

    ``zeros`` and ``constant`` are left out, as module parity leaves them out: a normalisation
    then divides by a variance of exactly zero plus its epsilon, and two correct float64
    algorithms for that variance (one pass or two) differ by far more than their rounding, with
    PyTorch's fp32 error no guide to it (Wav2Vec2's GroupNorm on silent audio: 20x the bound)."""
    batches = list(batches) or ([config.trace_sizes[batch_dim]] if batch_dim else [])
    cases = []
    for index, family in enumerate(f for f in FAMILIES if f not in DEGENERATE_FAMILIES):
        sizes = dict(config.trace_sizes)
        if batch_dim is not None:
            sizes[batch_dim] = batches[index % len(batches)]
        case = InputCase(family, sizes, seed=index)
        if family in STRESS_FAMILIES:
            case = leaving_range(config, replace(case, magnitude=max(STRESS_MAGNITUDES)))
        cases.append(case)
    if config.samples:
        sizes = dict(config.trace_sizes)
        cases += [InputCase(SAMPLES, sizes, sample=i, perturb="none") for i in range(len(load_samples(config)))]
    if config.dims:
        for end, seed in (("low", 100), ("high", 101)):
            sizes = {name: getattr(dim, end) for name, dim in config.dims.items()}
            cases.append(InputCase("normal", sizes, seed=seed))

    return list({describe_case(case): case for case in cases}.values())


def discrete_op_inputs(model: Any) -> list[tuple[str, str]]:
    """(node description, float input value) of every ArgMax/ArgMin/TopK node, in graph order."""
    found = []
    for node in model.graph.node:
        if node.op_type in DISCRETE_OPS and node.domain in ("", "ai.onnx"):
            found.append((f"{node.op_type} `{node.name or node.output[0]}`", node.input[0]))
    return found


def check_fidelity(
    config: GateConfig,
    graph: Graph64,
    graph_proto: Any,
    runner32: TorchRunner,
    runner64: TorchRunner,
    cases: list[InputCase],
    *,
    root: Path,
    runs_for: Callable[[InputCase, Sequence[str]], CaseRuns] | None = None,
) -> FidelityResult:
    """Judge every float output and every discrete op's logits on each of ``cases``; when a value
    leaves its bound, name the module where the graph first departs. Padded positions of declared
    ``padded_outputs`` are left out, as parity leaves them out. ``runs_for(case, values)`` makes
    a case's runs where the caller shares them with another check (``run_case_in_float64``'s)."""

    started = time.perf_counter()
    discrete = discrete_op_inputs(graph_proto)
    values = [value for _, value in discrete]
    described = tuple(describe_case(case) for case in cases)
    comparisons: list[FidelityComparison] = []
    unaligned: dict[str, str] = {}
    failing_case: InputCase | None = None
    for case, label in zip(cases, described):
        if runs_for is not None:
            runs = runs_for(case, values)
        else:
            runs = run_case_in_float64(case, config, runner32, runner64, graph, values)
        judged, why = judge_fidelity(runs, config, discrete, label)
        comparisons += judged
        unaligned.update(why)
        if failing_case is None and not all(judged):
            failing_case = case
    departure = None
    if failing_case is not None:
        departure, module_unaligned = first_departure(config, graph, graph_proto, runner32, runner64, failing_case, root)
        unaligned.update(module_unaligned)
    return FidelityResult(
        described, tuple(comparisons), departure=departure, unaligned=unaligned,
        derived_constants=len(graph.derived), seconds=time.perf_counter() - started,
    )  # fmt: skip


def judge_fidelity(
    runs: CaseRuns, config: GateConfig, discrete: Sequence[tuple[str, str]], label: str
) -> tuple[list[FidelityComparison], dict[str, str]]:
    """The exact rule on one case's float64 runs (``run_case_in_float64``): every float output, and
    the float input of every ArgMax/ArgMin/TopK node the graph holds (``discrete``: node, value)
    against PyTorch's matching call; and the discrete nodes that could not be paired, with why.
    Padded positions of declared ``padded_outputs`` are left out, as parity leaves them out."""
    evaluation = runs.graph64
    assert evaluation is not None and runs.torch64 is not None, "judge_fidelity needs run_case_in_float64's runs"
    graph_outputs = {name: evaluation.values[name] for name in config.outputs}
    (graph_outputs, exact, expected), _, _ = keep_valid_positions(config, runs.feeds, graph_outputs, runs.torch64, runs.torch32)
    assert graph_outputs is not None and exact is not None and expected is not None
    comparisons = []
    for name in config.outputs:
        if exact[name].dtype.kind != "f" or graph_outputs[name].shape != exact[name].shape:
            continue  # discrete outputs: their logits are judged below; shapes: the contract's
        effect = evaluation.storage.get(name)
        storage_max = float(effect.max(initial=0.0)) if effect is not None and effect.size else 0.0
        comparisons.append(compare_fidelity(name, label, graph_outputs[name], exact[name], expected[name], storage_max))
    matched, why = _match_discrete(list(discrete), evaluation.values, runs.discrete64)
    for (node, value), index in matched:
        comparisons.append(compare_fidelity(
            f"the float input of {node}", label, evaluation.values[value], runs.discrete64[index], runs.discrete32[index],
            evaluation.storage_effect(value),
        ))  # fmt: skip
    return comparisons, why


def _match_discrete(
    discrete: list[tuple[str, str]], values: Mapping[str, np.ndarray], recorded: Sequence[np.ndarray]
) -> tuple[list[tuple[tuple[str, str], int]], dict[str, str]]:
    """Pair the graph's discrete ops with PyTorch's calls, in order, where counts and shapes agree."""
    if not discrete:
        return [], {}
    shapes_agree = len(discrete) == len(recorded) and all(
        values[value].shape == recorded[index].shape for index, (_, value) in enumerate(discrete)
    )  # fmt: skip
    if shapes_agree:
        return [(entry, index) for index, entry in enumerate(discrete)], {}
    why = f"the graph has {len(discrete)} ArgMax/ArgMin/TopK nodes, PyTorch made {len(recorded)} such calls"
    return [], {node: why for node, _ in discrete}


def summary_lines(entry: Mapping[str, Any]) -> list[str]:
    """summary.md's lines for gate.json's ``fidelity`` entry."""
    lines = [f"`{entry['summary']}`", ""]
    if entry.get("departure"):
        d = entry["departure"]
        where = f"in `{d['module']}`" if d["module"] else "in the model's own forward"
        lines += [f"The graph departs from the model first {where} ({d['class']}, {d['source']}) on {d['case']}.", ""]
    for failure in entry.get("failures", [])[:10]:
        lines.append(f"- {failure['value']} on {failure['case']}: {failure['error']:.2g} (bound {failure['bound']:.2g})")
    if entry.get("unaligned"):
        lines += ["", "Not aligned: " + "; ".join(f"{k} ({v})" for k, v in sorted(entry["unaligned"].items()))]
    if entry.get("cases"):
        lines += ["", f"Cases: {'; '.join(entry['cases'])}."]
    lines.append(
        f"Bound: 16 x the effect of float32 storage of the graph's {entry.get('derived_constants', 0)} derived "
        f"constants + 2^-9 x PyTorch fp32's error. Cost: {entry.get('seconds')} s."
    )
    return lines
