"""What the parity checks found over a whole session, in one store: per-output errors, findings
about the model, the failures, the shrunk failing case and the fp64 reference's cost.

gate.json's "parity" section, summary.md, the parity plot, the publish metrics and the Python API
read it; under pytest-xdist each worker sends what it recorded as plain values (``take_delta``)
and the controller adds them up (``merge_delta``), so the numbers match a single-process run.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from harness.core.errors import first_line
from harness.core.inputs import InputCase

if TYPE_CHECKING:
    from harness.compare.rule import Finding, ParityResult
    from harness.core.config import Tolerance

MAX_FAILURES = 20  # failure lines kept; the count of failing examples is in the ledger


def detectable_flip_rate(compared: int, confidence: float = 0.95) -> float:
    """The smallest rate of differing values that ``compared`` exact comparisons would have caught
    at least once with probability ``confidence``: 1 - (1 - p)^n = confidence, about 3/n at 95%."""
    if compared <= 0:
        return 1.0
    return -math.expm1(math.log1p(-confidence) / compared)


def describe_exact(compared: int, differing: int) -> str:
    """One sentence on an exactly compared output, for summary.md."""
    if differing:
        return f"{differing:,} of {compared:,} values differ"
    return (
        f"{compared:,} values compared exactly, none differ: a flip rate above "
        f"{detectable_flip_rate(compared):.2g} would have been seen with 95% probability"
    )


def _finite_or_text(value: float) -> float | str:
    """JSON has no NaN/Inf: write them as text rather than as invalid JSON."""
    return value if math.isfinite(value) else str(value)


@dataclass
class OutputErrors:
    """Parity errors of one output over every example the parity checks ran."""

    max_abs: list[float] = field(default_factory=list)
    mean_abs: list[float] = field(default_factory=list)
    # Against the fp64 reference: PyTorch fp32's own error (the floor) and ONNX Runtime's.
    floor_max: list[float] = field(default_factory=list)
    candidate_max: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    # Examples on which the fixed bound could not judge this output (PyTorch fp32 itself too far
    # from fp64): the noise floor alone judged them.
    noise_only: int = 0
    bound_ratios: list[float] = field(default_factory=list)
    # Values at padded positions (padded_outputs) that parity left out, and the values it compared.
    left_out: int = 0
    compared: int = 0
    # Integer/bool outputs: values compared exactly over every example, and how many differed.
    discrete_values: int = 0
    discrete_mismatched: int = 0

    def summary(self) -> dict[str, float | int | str]:
        if not self.max_abs:
            return {"examples": 0}
        if self.discrete_values:
            return {
                "examples": len(self.max_abs), "compared_exactly": self.discrete_values,
                "values_differing": self.discrete_mismatched,
                "detectable_flip_rate": detectable_flip_rate(self.discrete_values),
            }  # fmt: skip
        summary: dict[str, float | int | str] = {
            "examples": len(self.max_abs),
            "max_abs": _finite_or_text(max(self.max_abs)),
            "mean_abs": _finite_or_text(sum(self.mean_abs) / len(self.mean_abs)),
            "worst_example_mean_abs": _finite_or_text(max(self.mean_abs)),
            "examples_judged_by_noise_only": self.noise_only,
            # Worst |ONNX - PyTorch| / (atol + rtol*|PyTorch|): above 1, the fixed bound alone would block.
            "fixed_bound_ratio_worst": _finite_or_text(max(self.bound_ratios, default=0.0)),
            "values_compared": self.compared,
            "values_left_out_as_padding": self.left_out,
        }
        if self.ratios:
            floor, candidate = max(self.floor_max), max(self.candidate_max)
            summary |= {
                # The examples these figures come from: those that ran float64 (gate.json's
                # parity.fp64_spared_examples says how many did not need to).
                "examples_against_float64": len(self.ratios),
                "noise_floor_max": floor,
                "onnx_vs_fp64_max": candidate,
                # Max over examples of ONNX error / PyTorch fp32 error: how close to a block it came.
                "noise_ratio_worst": _finite_or_text(max(self.ratios)),
                "noise_ratio_overall": _finite_or_text(candidate / floor if floor > 0 else (0.0 if candidate == 0 else math.inf)),
            }
        return summary

    def merge(self, values: Mapping[str, Any]) -> None:
        for key, value in values.items():
            if isinstance(value, list):
                getattr(self, key).extend(value)
            else:
                setattr(self, key, getattr(self, key) + value)


@dataclass
class FindingRecord:
    """Every occurrence of one kind of finding on one output, summarised by its worst case."""

    kind: str
    output: str
    blocking: bool
    count: int = 0
    in_range: int = 0
    worst_value: float = -math.inf
    worst: str = ""

    def add(self, finding: Finding) -> None:
        self.count += 1
        self.in_range += finding.in_range
        self.blocking = self.blocking or finding.blocking
        if finding.value > self.worst_value:
            self.worst_value, self.worst = finding.value, str(finding)

    def merge(self, values: Mapping[str, Any]) -> None:
        self.count += values["count"]
        self.in_range += values["in_range"]
        self.blocking = self.blocking or values["blocking"]
        if values["worst_value"] > self.worst_value:
            self.worst_value, self.worst = values["worst_value"], values["worst"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "output": self.output, "blocking": self.blocking, "examples": self.count,
            "examples_in_range": self.in_range, "examples_out_of_range": self.count - self.in_range,
            "worst": self.worst,
        }  # fmt: skip


def case_to_dict(case: InputCase | None) -> dict[str, Any] | None:
    """Structured, so that `onnx-gate debug` rebuilds the exact input (families need all fields)."""
    return {**vars(case), "sizes": dict(case.sizes)} if case is not None else None


class ParityStats:
    """The parity statistics of one session (or, on an xdist worker, since the last delta)."""

    def __init__(self, outputs: Iterable[str]) -> None:
        self.outputs = tuple(outputs)
        self.fp64_unavailable: str | None = None  # why the model cannot run in float64
        self.bias: list[str] = []  # the systematic-error check's verdict per output, once per session
        self.module_parity: dict[str, Any] | None = None  # module_parity.py's result, once per session
        self.fidelity: dict[str, Any] | None = None  # fidelity.py's result, once per session
        self.rollout: dict[str, Any] | None = None  # rollout.py's full-length rollout, once per session
        self._reset()

    def _reset(self) -> None:
        self.examples = 0
        self.examples_out_of_range = 0
        self.examples_from_samples = 0
        self.errors: dict[str, OutputErrors] = {name: OutputErrors() for name in self.outputs}
        self.findings: dict[tuple[str, str], FindingRecord] = {}
        self.failures: list[str] = []  # the first line of each failing example, at most MAX_FAILURES
        # The last failing case, for `onnx-gate debug`: Hypothesis replays a failing test's shrunk
        # example last, so this is the minimal case the gate prints, not the first one found.
        self.failure_case: InputCase | None = None
        self.fp64_seconds = 0.0
        # Examples whose float64 run was spared: it could change neither verdict nor finding.
        self.fp64_spared = 0
        # Per failing parity test (node id): what it spent after its first failure (failure_budget.py).
        self.after_first_failure: dict[str, dict[str, Any]] = {}

    def record(self, result: ParityResult, case: InputCase | None = None) -> None:
        """Add one example's result (``case`` is what it ran on)."""
        self.examples += 1
        self.examples_out_of_range += not result.in_range
        for comparison in result:
            errors = self.errors.setdefault(comparison.output, OutputErrors())
            errors.max_abs.append(comparison.max_abs)
            errors.mean_abs.append(comparison.mean_abs)
            errors.noise_only += comparison.excused > 0
            errors.bound_ratios.append(comparison.bound_ratio)
            if comparison.discrete:
                errors.discrete_values += comparison.values
                errors.discrete_mismatched += comparison.mismatched
            errors.left_out += result.left_out.get(comparison.output, 0)
        for name, count in result.compared.items():
            self.errors.setdefault(name, OutputErrors()).compared += count
        self.examples_from_samples += case is not None and case.family == "samples"
        for noise in result.noise:
            errors = self.errors.setdefault(noise.output, OutputErrors())
            errors.floor_max.append(noise.floor_max)
            errors.candidate_max.append(noise.candidate_max)
            errors.ratios.append(noise.judged_ratio)
        self.record_findings(result.findings)
        if not result:
            if len(self.failures) < MAX_FAILURES:
                self.failures.append(first_line(result))
            self.failure_case = case

    def record_findings(self, findings: Iterable[Finding]) -> None:
        """Findings about the model from a check other than parity (e.g. sensitivity)."""
        for finding in findings:
            key = (finding.kind, finding.output)
            self.findings.setdefault(key, FindingRecord(finding.kind, finding.output, finding.blocking)).add(finding)

    def summary(self, tolerances: Mapping[str, Tolerance]) -> dict[str, Any]:
        """gate.json's "parity" section."""
        return {
            "examples": self.examples,
            "examples_in_range": self.examples - self.examples_out_of_range,
            "examples_out_of_range": self.examples_out_of_range,
            "examples_from_samples": self.examples_from_samples,
            "findings": [record.to_dict() for record in self.findings.values()],
            "outputs": {name: errors.summary() for name, errors in self.errors.items()},
            "tolerance": {name: tolerance.__dict__ for name, tolerance in tolerances.items()},
            "fp64_reference_seconds": round(self.fp64_seconds, 3),
            "fp64_spared_examples": self.fp64_spared,
            "fp64_unavailable": self.fp64_unavailable,
            "systematic_error": list(self.bias),
            "after_first_failure": list(self.after_first_failure.values()),
            "module_parity": self.module_parity,
            "fidelity": self.fidelity,
            "rollout": self.rollout,
        }

    # --- across xdist workers: plain values only ---------------------------------------------

    def take_delta(self) -> dict[str, Any] | None:
        """What was recorded since the last call, as plain values; resets it (workers only: a
        worker's own totals are never reported, the controller's are)."""
        if (
            not self.examples and self.failure_case is None and not self.fp64_seconds and not self.findings
            and not self.fp64_spared
            and not self.bias and not self.after_first_failure and self.module_parity is None
            and self.fidelity is None and self.rollout is None
        ):  # fmt: skip
            return None
        delta = {
            "examples": self.examples,
            "out_of_range": self.examples_out_of_range,
            "from_samples": self.examples_from_samples,
            "outputs": {name: dataclasses.asdict(errors) for name, errors in self.errors.items()},
            "findings": [dataclasses.asdict(record) for record in self.findings.values()],
            "failures": list(self.failures),
            "failure_case": case_to_dict(self.failure_case),
            "fp64_seconds": self.fp64_seconds,
            "fp64_spared": self.fp64_spared,
            "fp64_unavailable": self.fp64_unavailable,
            "bias": list(self.bias),
            "after_first_failure": dict(self.after_first_failure),
            "module_parity": self.module_parity,
            "fidelity": self.fidelity,
            "rollout": self.rollout,
        }
        self._reset()
        self.bias = []
        self.module_parity = None
        self.fidelity = None
        self.rollout = None
        return delta

    def merge_delta(self, delta: Mapping[str, Any]) -> None:
        """Add a worker's delta."""
        self.examples += delta["examples"]
        self.examples_out_of_range += delta["out_of_range"]
        self.examples_from_samples += delta["from_samples"]
        for name, values in delta["outputs"].items():
            self.errors.setdefault(name, OutputErrors()).merge(values)
        for values in delta["findings"]:
            key = (values["kind"], values["output"])
            self.findings.setdefault(key, FindingRecord(values["kind"], values["output"], values["blocking"])).merge(values)
        self.failures.extend(delta["failures"][: max(0, MAX_FAILURES - len(self.failures))])
        if delta["failure_case"] is not None:
            self.failure_case = InputCase(**delta["failure_case"])
        self.fp64_seconds += delta["fp64_seconds"]
        self.fp64_spared += delta.get("fp64_spared", 0)
        self.fp64_unavailable = self.fp64_unavailable or delta["fp64_unavailable"]
        self.bias = self.bias or list(delta.get("bias", []))
        self.after_first_failure.update(delta.get("after_first_failure", {}))
        self.module_parity = self.module_parity or delta.get("module_parity")
        self.fidelity = self.fidelity or delta.get("fidelity")
        self.rollout = self.rollout or delta.get("rollout")
