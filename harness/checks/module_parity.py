"""Module-level parity: every aligned module's output, judged where a defect starts.

Where graph fidelity judges the artifact (harness/checks/fidelity.py), the check is exact: each
aligned module's value in the graph evaluated in float64 against the module's PyTorch float64
output, held to the fidelity bound; the first module that departs, in PyTorch's order, blocks
(``check_modules_in_float64``). Below, the rule for graphs fidelity cannot evaluate (contrib ops):
ONNX Runtime fp32 against each module's own fp32 noise.

The final outputs can hide a defect: argmax tags flip only where two logits nearly tie, a
saturating head squashes an error, padded positions are left out. The module that computes
wrongly still shows it. On a small fixed sample of input cases, this check runs the model in
PyTorch fp32 and float64 with hooks on every named module, and ONNX Runtime once with those
modules' values as extra outputs, through ``onnx-gate debug``'s alignment (harness/debug). A module
whose output is over ``noise_factor`` times its own fp32 noise while its inputs are within it is
where a mismatch starts: it blocks, named as debug names it.

The sample is one case per input family, the pinned batch sizes taken in turn so each appears,
at the trace sizes of the other dimensions, with every mask full. Degenerate families (``zeros``,
``constant``) are left out: PyTorch is exact by luck there and a module's floor would be zero (the
parity check makes that a finding, not a block). Padding is left out because modules compute
don't-care values at padded positions that the final outputs drop (``padded_outputs``). The
cost is a few forward passes per case and one ONNX Runtime session; it is reported.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from harness.align.capture import capture_runs
from harness.align.probe import UNOPTIMISED, Probe
from harness.align.scopes import align_capture
from harness.align.verdict import culprit_sentence, judge
from harness.align.walk import ModuleWalk, walk_capture
from harness.checks.declared import declare_check, unless_skipped
from harness.core import memory
from harness.core.inputs import (
    DEGENERATE_FAMILIES, SAMPLES, STRESS_FAMILIES, InputCase, describe_case, families_for, leaving_range,
)  # fmt: skip

if TYPE_CHECKING:
    import onnx

    from harness.align.verdict import ModuleRow
    from harness.core.config import GateConfig
    from harness.runtime.graph64 import Graph64
    from harness.runtime.runners import TorchRunner

# Required unless it says, by skipping, why it could not judge (turned off, no scope information in
# the ONNX file, no float64 run): a statement in the report, not a failure.
CHECK = declare_check("module_parity", required=unless_skipped("module_parity"), order=85)

# Above these the check is not run, saying why: the capture holds every module's activations
# in two precisions, which scales with the model and the input.
MAX_PARAMETERS = 100_000_000
MAX_INPUT_ELEMENTS = 1 << 20
NO_SCOPES = (
    "the ONNX file carries no scope information (no dynamo node metadata, no `/module/Op` node names), "
    "so no ONNX value can be tied to a module; the final outputs were compared as usual"
)


@dataclass(frozen=True)
class ModuleCulprit:
    """A module where a mismatch starts, on one input case."""

    case: str
    module: str
    cls: str
    source: str
    ratio: float  # inf for NaN/Inf that only ONNX Runtime produces
    line: str  # debug's own sentence, e.g. "FAILED | the mismatch starts in `head` (Linear, ...)"

    def to_dict(self) -> dict[str, Any]:
        import math

        ratio = self.ratio if math.isfinite(self.ratio) else str(self.ratio)
        return {"case": self.case, "module": self.module, "class": self.cls, "source": self.source,
                "ratio": ratio, "line": self.line}  # fmt: skip


@dataclass(frozen=True)
class ModuleParityResult:
    """The check over its whole sample: truthy when no module blocks."""

    passed: bool
    factor: float
    cases: tuple[str, ...] = ()
    scheme: str = ""
    aligned: int = 0  # modules aligned on the first case
    named: int = 0
    culprits: tuple[ModuleCulprit, ...] = ()
    # The highest ratio, as judged, of any aligned module whose inputs were within noise, and where.
    worst_module: str = ""
    worst_ratio: float = 0.0
    worst_case: str = ""
    not_judged: str = ""  # why no module could be judged (e.g. no scope information); not a failure
    seconds: float = 0.0
    peak_rss_mb: float = 0.0
    peak_rss_growth_mb: float = 0.0
    suspects: tuple[str, ...] = field(default=())  # over the bound, inputs unmatched: not blocking
    # "float64": the graph evaluated in float64 against PyTorch float64, each module held to its
    # fidelity bound (exact; ratios are error / bound). "noise": ONNX Runtime fp32 against each
    # module's own fp32 noise (ratios are multiples of it), where graph fidelity cannot judge.
    rule: str = "noise"
    with_fidelity: int = 0  # cases run once for graph fidelity and this check: their cost is fidelity's

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        if self.not_judged:
            return f"NOT JUDGED | module-level parity: {self.not_judged}"
        if self.culprits:
            modules = sorted({c.module for c in self.culprits})
            first = self.culprits[0]
            return (
                f"{first.line} [on {first.case}] ({len(self.culprits)} of {len(self.cases)} cases; "
                f"modules: {', '.join(modules)})"
            )
        if self.rule == "float64":
            return (
                f"PASSED | every aligned module's float64 graph value within its fidelity bound on {len(self.cases)} "
                f"cases ({self.aligned} of {self.named} named modules aligned, {self.scheme}); worst "
                f"{self.worst_ratio:.3g}x its bound at `{self.worst_module or '-'}`"
            )
        return (
            f"PASSED | every aligned module within {self.factor:g}x its own fp32 noise on {len(self.cases)} cases "
            f"({self.aligned} of {self.named} named modules aligned, {self.scheme}); worst {self.worst_ratio:.3g}x "
            f"at `{self.worst_module or '-'}`"
        )

    def to_dict(self) -> dict[str, Any]:
        import math

        worst = self.worst_ratio if math.isfinite(self.worst_ratio) else str(self.worst_ratio)
        return {
            "status": "not judged" if self.not_judged else "passed" if self.passed else "failed",
            "reason": self.not_judged or None, "rule": self.rule, "cases": list(self.cases), "scheme": self.scheme,
            "aligned_modules": self.aligned, "named_modules": self.named, "noise_factor": self.factor,
            "culprits": [c.to_dict() for c in self.culprits], "suspects": list(self.suspects),
            "worst_module": self.worst_module or None, "worst_ratio": worst, "worst_case": self.worst_case or None,
            "cost": {"seconds": round(self.seconds, 2), "peak_rss_mb": round(self.peak_rss_mb),
                     "peak_rss_growth_mb": round(self.peak_rss_growth_mb), "cases_run_with_fidelity": self.with_fidelity},
            "limits": {"max_parameters": MAX_PARAMETERS, "max_input_elements": MAX_INPUT_ELEMENTS},
            "summary": str(self),
        }  # fmt: skip


def module_cases(
    config: GateConfig, batch_dim: str | None, batches: list[int], *, stress_magnitude: float = 1.0
) -> list[InputCase]:
    """One case per non-degenerate input family, the pinned ``batches`` in turn, so that every
    family and every batch size appears at least once; full masks, trace sizes elsewhere.

    ``stress_magnitude``: the size of the ``large`` and ``spikes`` cases. The float64 rule takes
    graph fidelity's (the largest the property tests draw), whose cases it shares. The noise
    rule keeps 1: it compares ONNX Runtime's fp32 modules with PyTorch's, and far outside the
    range a runtime's kernel tails (a saturated gate's sigmoid, times a state of 1e4) would read
    as the export's defect."""
    families = [family for family in families_for(config) if family not in DEGENERATE_FAMILIES]
    if batch_dim is not None and not batches:
        batches = [config.trace_sizes[batch_dim]]
    count = max(len(families), len(batches))
    cases = []
    for index in range(count):
        family = families[index % len(families)]
        sizes = dict(config.trace_sizes)
        if batch_dim is not None:
            sizes[batch_dim] = batches[index % len(batches)]
        extra: dict[str, Any] = {"perturb": "none"} if family == SAMPLES else {}
        if config.padding:
            extra["valid"] = "all"
        case = InputCase(family, sizes, seed=index, **extra)
        if family in STRESS_FAMILIES:
            # As graph fidelity draws them, so that the float64 rule shares its runs.
            case = leaving_range(config, replace(case, magnitude=stress_magnitude))
        cases.append(case)
    return cases


def check_module_parity(
    config: GateConfig,
    onnx_path: Path,
    runner32: TorchRunner,
    runner64: TorchRunner | None,
    cases: list[InputCase],
    *,
    root: Path,
    threads: int = 1,
    fp64_unavailable: str | None = None,
) -> ModuleParityResult:
    """Judge every aligned module on each of ``cases``, by the rule in this module's docstring."""
    started, peak_before = time.perf_counter(), memory.peak_rss_bytes()
    factor = max((config.tolerance_for(name).noise_factor for name in config.outputs), default=0.0)
    result = _judge_cases(config, onnx_path, runner32, runner64, cases, root, threads, factor, fp64_unavailable)
    peak = memory.peak_rss_bytes()
    return _with_cost(result, time.perf_counter() - started, peak / 1e6, max(0, peak - peak_before) / 1e6)


def check_modules_in_float64(
    config: GateConfig, graph: Graph64, graph_proto: onnx.ModelProto, runner32: TorchRunner, runner64: TorchRunner,
    cases: list[InputCase], *, root: Path, walks: Mapping[str, ModuleWalk] | None = None,
) -> ModuleParityResult:  # fmt: skip
    """``walks``: cases already walked, by their description (graph fidelity's run of a case it
    shares with this check, ``run_and_walk``).

    Module parity made exact: where graph fidelity judges the artifact, each aligned module's
    value in the float64 graph against the module's PyTorch float64 output, held to the fidelity
    bound (harness/checks/fidelity.py). The first module that departs, in PyTorch's order, blocks.
    ONNX Runtime's fp32 error at a module is the runtime's precision, which parity judges at the
    outputs; it is not judged here."""
    started, peak_before = time.perf_counter(), memory.peak_rss_bytes()
    described = tuple(describe_case(case) for case in cases)
    culprits: list[ModuleCulprit] = []
    worst: tuple[float, str, str] = (0.0, "", "")
    scheme, aligned, named = "", 0, 0
    with_fidelity = 0
    result: ModuleParityResult | None = None
    for case, label in zip(cases, described):
        feeds = case.materialize(config)
        elements = sum(int(array.size) for array in feeds.values())
        if elements > MAX_INPUT_ELEMENTS:
            result = _not_judged(
                1.0, f"{label} has {elements:,} input elements, over this check's limit of {MAX_INPUT_ELEMENTS:,}", described
            )
            break
        walk = (walks or {}).get(label)
        with_fidelity += walk is not None
        if walk is None:
            runs = capture_runs(runner32, runner64, feeds, root=root, case=case)
            walk = walk_capture(config, graph, graph_proto, runs, label, runner32.model, root)
        if walk.scheme == "none":
            result = _not_judged(1.0, NO_SCOPES, described)
            break
        if not walk.modules:
            result = _not_judged(1.0, f"no named module could be aligned ({walk.scheme})", described)
            break
        if not scheme:
            scheme, aligned, named = walk.scheme, len(walk.modules), walk.named
        for call, comparison in walk.modules:
            if comparison.ratio > worst[0]:
                worst = (comparison.ratio, call.name, walk.case)
        departure = walk.departure()
        if departure is not None and departure.module:
            line = f"FAILED | the graph is not the model: {departure}"
            culprits.append(ModuleCulprit(walk.case, departure.module, departure.cls, departure.source,
                                          departure.comparison.ratio, line))  # fmt: skip
    if result is None:
        result = ModuleParityResult(
            not culprits, 1.0, described, scheme, aligned, named, tuple(culprits), worst[1], worst[0], worst[2],
            rule="float64", with_fidelity=with_fidelity,
        )  # fmt: skip
    peak = memory.peak_rss_bytes()
    return _with_cost(result, time.perf_counter() - started, peak / 1e6, max(0, peak - peak_before) / 1e6)


def _with_cost(result: ModuleParityResult, seconds: float, peak_mb: float, growth_mb: float) -> ModuleParityResult:
    return replace(result, seconds=seconds, peak_rss_mb=peak_mb, peak_rss_growth_mb=growth_mb)


def _not_judged(factor: float, reason: str, cases: tuple[str, ...] = ()) -> ModuleParityResult:
    return ModuleParityResult(True, factor, cases, not_judged=reason)


def _judge_cases(
    config: GateConfig, onnx_path: Path, runner32: TorchRunner, runner64: TorchRunner | None,
    cases: list[InputCase], root: Path, threads: int, factor: float, fp64_unavailable: str | None,
) -> ModuleParityResult:  # fmt: skip

    from harness.runtime.graph64 import graph_without_weights  # defers onnx
    if factor <= 0:
        return _not_judged(factor, "the noise check is off (noise_factor = 0), so no module has a floor to judge by")
    if runner64 is None or fp64_unavailable:
        return _not_judged(factor, f"the model cannot run in float64 ({fp64_unavailable or 'no float64 copy'})")
    parameters = sum(p.numel() for p in runner32.model.parameters())
    if parameters > MAX_PARAMETERS:
        return _not_judged(factor, f"the model has {parameters:,} parameters, over this check's limit of {MAX_PARAMETERS:,}")
    proto = graph_without_weights(onnx_path)
    described = tuple(describe_case(case) for case in cases)
    probes: dict[tuple[str, ...], Probe] = {}
    culprits: list[ModuleCulprit] = []
    suspects: list[str] = []
    worst: tuple[float, str, str] = (0.0, "", "")
    scheme, aligned_count, named = "", 0, 0
    for case, label in zip(cases, described):
        feeds = case.materialize(config)
        elements = sum(int(array.size) for array in feeds.values())
        if elements > MAX_INPUT_ELEMENTS:
            return _not_judged(
                factor, f"{label} has {elements:,} input elements, over this check's limit of {MAX_INPUT_ELEMENTS:,}",
                described,
            )  # fmt: skip
        runs = capture_runs(runner32, runner64, feeds, root=root, case=case)
        capture = runs.modules
        if capture.outputs64 is None:
            return _not_judged(factor, f"the model cannot run in float64 ({capture.fp64_unavailable})", described)
        modules = [name for name in capture.modules if name]
        alignment = align_capture(proto, capture)
        if alignment.scheme == "none":
            return _not_judged(factor, NO_SCOPES, described)
        if not alignment.aligned:
            return _not_judged(factor, f"no named module could be aligned ({alignment.scheme})", described)
        if not scheme:
            scheme, aligned_count, named = alignment.scheme, len(alignment.aligned), len(modules)
        values = tuple(alignment.values())
        if values not in probes:
            probes[values] = Probe(onnx_path, values, level=UNOPTIMISED, threads=threads)
        verdict = judge(capture, alignment, probes[values].run(feeds), feeds, config.outputs, factor)
        for row in verdict.rows:
            if row.inputs_ok and row.judged_ratio is not None and row.judged_ratio > worst[0]:
                worst = (row.judged_ratio, row.module, label)
        if verdict.culprit is not None:
            culprits.append(_culprit(verdict.culprit, factor, label))
        elif verdict.suspect is not None:
            suspects.append(f"{verdict.suspect.module} on {label}")
    return ModuleParityResult(
        not culprits, factor, described, scheme, aligned_count, named, tuple(culprits),
        worst[1], worst[0], worst[2], suspects=tuple(suspects),
    )  # fmt: skip


def _culprit(row: ModuleRow, factor: float, case: str) -> ModuleCulprit:
    ratio = float("inf") if row.nonfinite or row.ratio is None else row.ratio
    return ModuleCulprit(case, row.module, row.cls, row.source, ratio, culprit_sentence(row, factor))


def summary_lines(entry: dict[str, Any]) -> list[str]:
    """summary.md's lines for gate.json's ``module_parity`` entry."""
    cost, limits = entry["cost"], entry["limits"]
    lines = [f"`{entry['summary']}`", ""]
    if entry["culprits"]:
        lines += [f"- on {c['case']}: `{c['line']}`" for c in entry["culprits"]] + [""]
    if entry["suspects"]:
        lines += [f"Over the bound but with inputs that could not be matched to PyTorch's (not blocking): "
                  f"{'; '.join(entry['suspects'])}.", ""]  # fmt: skip
    if entry["cases"]:
        lines.append(f"Cases: {'; '.join(entry['cases'])}.")
    shared = cost.get("cases_run_with_fidelity", 0)
    together = f" ({shared} of its cases run once with graph fidelity's, their time counted there)" if shared else ""
    lines.append(
        f"Cost: {cost['seconds']} s{together}, peak RSS {cost['peak_rss_mb']} MB (+{cost['peak_rss_growth_mb']} MB). "
        f"Limits: models up to {limits['max_parameters']:,} parameters, cases up to "
        f"{limits['max_input_elements']:,} input elements; `module_parity = false` turns it off."
    )
    return lines

