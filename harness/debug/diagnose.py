"""One debug run: capture, align, probe once unoptimised and once at the production level, judge,
isolate the culprit. The result is a value; report.py renders it."""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from harness.align import probe
from harness.align.capture import capture_modules
from harness.align.scopes import align_capture
from harness.align.verdict import judge
from harness.align.walk import walk_capture
from harness.checks.fidelity import MAX_PARAMETERS
from harness.compare.rule import compare_noise
from harness.core.config import GateConfig, Tolerance
from harness.core.errors import ArtifactError
from harness.debug.isolate import isolate

if TYPE_CHECKING:
    import numpy as np
    import onnx
    from torch import nn

    from harness.align.capture import Capture
    from harness.align.scopes import Alignment
    from harness.align.verdict import ModuleVerdict
    from harness.align.walk import ModuleWalk
    from harness.debug.isolate import Isolation
    from harness.runtime.case_runs import CaseRuns


@dataclass(frozen=True)
class DebugRequest:
    config: GateConfig
    onnx_path: Path
    feeds: Mapping[str, np.ndarray]
    case: str  # how the input was chosen, for the report
    root: Path  # source paths are shown relative to it


@dataclass
class DebugResult:
    request: DebugRequest
    alignment: Alignment
    verdict: ModuleVerdict
    named_modules: int
    # Final outputs against fp64, per ONNX Runtime optimisation level: output -> passed.
    unoptimised_ok: dict[str, bool] = field(default_factory=dict)
    production_ok: dict[str, bool] = field(default_factory=dict)
    production_verdict: ModuleVerdict | None = None  # attribution at the production level, fusion-only cases
    isolation: Isolation | None = None
    fp64_unavailable: str | None = None
    # The exact view: the graph evaluated in float64 against PyTorch float64, module by module
    # (harness/checks/fidelity.py), or why it could not be had.
    exact: ModuleWalk | None = None
    exact_unavailable: str = ""
    factor_note: str = ""
    seconds: float = 0.0
    peak_rss_mb: float = 0.0

    @property
    def fusion_only(self) -> bool:
        return all(self.unoptimised_ok.values()) and not all(self.production_ok.values())

    @property
    def mismatch(self) -> bool:
        return not all(self.unoptimised_ok.values()) or not all(self.production_ok.values())


def _factor(config: GateConfig) -> tuple[float, str]:
    factors = [config.tolerance_for(name).noise_factor for name in config.outputs]
    factor = max(factors, default=0.0)
    if factor > 0:
        return factor, ""
    default = Tolerance().noise_factor
    return default, f"the gate's noise check is off (noise_factor 0); debug uses {default:g}"


def _outputs_ok(
    values: Mapping[str, np.ndarray], capture: Capture, names: tuple[str, ...], factor: float
) -> dict[str, bool]:
    outputs32, outputs64 = capture.outputs32, capture.outputs64
    if outputs64 is None:
        return {name: True for name in names}
    return {
        name: bool(compare_noise(name, values[name], outputs32[i], outputs64[i], factor))
        for i, name in enumerate(names)
    }


def _exact_walk(
    request: DebugRequest, model: nn.Module, proto: onnx.ModelProto, runs: CaseRuns
) -> tuple[ModuleWalk | None, str]:
    """Graph fidelity's module walk on the debug input's runs, or why the graph has no float64 evaluation."""
    capture: Capture = runs.modules
    from harness.runtime.graph64 import Graph64, model_constants, unsupported_ops  # defers onnx
    if capture.outputs64 is None:
        return None, f"the model cannot run in float64 ({capture.fp64_unavailable})"
    tensors = [t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()]
    if sum(t.numel() for t in tensors) > MAX_PARAMETERS:
        return None, f"the model is over graph fidelity's limit of {MAX_PARAMETERS:,} parameters"
    missing = unsupported_ops(proto)
    if missing:
        return None, f"ops without a float64 reference ({', '.join(missing)})"
    graph = Graph64(request.onnx_path, request.config.outputs, model_constants(model))
    if not graph.available:
        return None, graph.problem or "the graph cannot be evaluated in float64"
    walk = walk_capture(request.config, graph, proto, runs, request.case, model, request.root)
    return walk, ""


def diagnose(request: DebugRequest, model: nn.Module) -> DebugResult:
    import onnx

    started = time.perf_counter()
    config = request.config
    factor, note = _factor(config)
    input_names = [spec.name for spec in config.inputs]
    try:
        proto = onnx.load(str(request.onnx_path))
    except Exception as exc:
        raise ArtifactError(
            f"cannot read ONNX file {request.onnx_path.name!r}: {type(exc).__name__}"
        ) from None
    runs = capture_modules(model, request.feeds, input_names, config.outputs, root=request.root)
    capture = runs.modules
    modules = [name for name in capture.modules if name]
    alignment = align_capture(proto, capture)
    values = probe.run(proto, request.feeds, alignment.values(), level=probe.UNOPTIMISED)
    verdict = judge(capture, alignment, values, request.feeds, config.outputs, factor)
    production = probe.run(proto, request.feeds, [], level=probe.PRODUCTION)
    result = DebugResult(
        request, alignment, verdict, len(modules),
        unoptimised_ok=_outputs_ok(values, capture, config.outputs, factor),
        production_ok=_outputs_ok(production, capture, config.outputs, factor),
        fp64_unavailable=capture.fp64_unavailable, factor_note=note,
    )  # fmt: skip
    if result.fusion_only:
        # Marking outputs can stop the very fusion that is wrong; this is the best available view.
        marked = probe.run(proto, request.feeds, alignment.values(), level=probe.PRODUCTION)
        result.production_verdict = judge(capture, alignment, marked, request.feeds, config.outputs, factor)
    result.exact, result.exact_unavailable = _exact_walk(request, model, proto, runs)
    culprit = verdict.culprit or (result.production_verdict.culprit if result.production_verdict else None)
    if culprit is not None:
        result.isolation = isolate(
            proto, culprit, alignment.aligned[culprit.module], capture.modules[culprit.module],
            request.feeds, factor, level=probe.PRODUCTION if verdict.culprit is None else probe.UNOPTIMISED,
        )  # fmt: skip
    result.seconds = time.perf_counter() - started
    result.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result
