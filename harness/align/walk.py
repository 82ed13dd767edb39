"""The module walk: every module of the model that the exported graph's values align with, compared
in float64 (the exported graph by the reference evaluator against PyTorch), in the order PyTorch
completed them. Graph fidelity, module parity and ``onnx-gate debug`` all read it."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from harness.align.capture import capture_runs, relative_source
from harness.align.scopes import align_capture
from harness.align.verdict import fold_candidates
from harness.compare.fidelity import FidelityComparison, compare_fidelity
from harness.core.inputs import describe_case

if TYPE_CHECKING:
    import numpy as np

    from harness.align.capture import Capture
    from harness.align.scopes import Alignment
    from harness.core.config import GateConfig
    from harness.core.inputs import InputCase
    from harness.runtime.case_runs import CaseRuns
    from harness.runtime.graph64 import Graph64
    from harness.runtime.runners import TorchRunner


@dataclass(frozen=True)
class Departure:
    """The first module whose float64 output leaves its bound, on one case."""

    module: str
    cls: str
    source: str
    case: str
    comparison: FidelityComparison

    def __str__(self) -> str:
        where = f"in `{self.module}`" if self.module else "in the model's own forward, after every aligned module agreed"
        return (
            f"the graph departs from the model first {where} ({self.cls}, {self.source}): graph fp64 "
            f"vs PyTorch fp64 {self.comparison.error:.2g}, a faithful graph stays below {self.comparison.bound:.2g}"
        )


@dataclass(frozen=True)
class ModuleWalk:
    """Every aligned module's float64 graph value against PyTorch float64 on one case, in the
    order PyTorch completed the modules, then the model's own outputs; what could not be aligned."""

    case: str
    scheme: str  # how values were aligned ("none": the file carries no scope information)
    named: int  # named modules PyTorch called
    modules: tuple[tuple[Any, FidelityComparison], ...] = ()  # (the module's call, its comparison)
    outputs: tuple[FidelityComparison, ...] = ()
    unaligned: Mapping[str, str] = field(default_factory=dict)
    forward_cls: str = ""  # the model's class and where its forward is, for a departure there
    forward_source: str = ""

    def without_activations(self) -> ModuleWalk:
        """This walk without the modules' inputs and outputs: what a verdict read later needs."""
        bare = {"inputs32": [], "inputs64": [], "outputs32": [], "outputs64": []}
        return replace(self, modules=tuple((replace(call, **bare), comparison) for call, comparison in self.modules))

    def departure(self) -> Departure | None:
        """The first module that leaves its bound; else the model's own forward, when an output does."""
        for call, comparison in self.modules:
            if not comparison:
                return Departure(call.name, call.cls, call.source, self.case, comparison)
        for comparison in self.outputs:
            if not comparison:
                return Departure("", self.forward_cls, self.forward_source, self.case, comparison)
        return None


def walk_modules(
    config: GateConfig, graph: Graph64, graph_proto: Any, runner32: TorchRunner, runner64: TorchRunner,
    case: InputCase, root: Path,
) -> ModuleWalk:  # fmt: skip
    """Compare, in float64, every graph value that has a module counterpart on ``case``."""
    runs = capture_runs(runner32, runner64, case.materialize(config), root=root, case=case)
    return walk_capture(config, graph, graph_proto, runs, describe_case(case), runner32.model, root)


def walk_capture(
    config: GateConfig, graph: Graph64, graph_proto: Any, runs: CaseRuns, label: str, model: Any, root: Path,
    *, alignment: Alignment | None = None,
) -> ModuleWalk:  # fmt: skip
    """``walk_modules`` on a case's runs already made with every module hooked (``capture_runs``;
    ``onnx-gate debug`` makes its own). Where ``runs.graph64`` holds the aligned values (made
    with ``alignment``, ``aligned_values``), the graph is not evaluated again."""
    capture: Capture = runs.modules
    feeds = runs.feeds
    alignment = alignment or align_capture(graph_proto, capture)
    unaligned = {f"module `{name}`": why for name, why in alignment.unaligned.items()}
    named = len([name for name in capture.modules if name])
    if capture.outputs64 is None:
        return ModuleWalk(label, alignment.scheme, named, unaligned=unaligned)
    wanted = aligned_values(alignment)
    evaluation = runs.graph64
    if evaluation is None or any(value not in evaluation.values for value in wanted):
        evaluation = graph.infer(feeds, wanted)
    modules = []
    for call in capture.in_order():
        values = alignment.aligned.get(call.name)
        if values is None or not call.outputs64 or not call.outputs32:
            continue
        graph_value = evaluation.values[values.output]
        if graph_value.shape != call.outputs64[0].shape or graph_value.dtype.kind != "f":
            continue
        storage = evaluation.storage_effect(values.output)
        comparison = compare_fidelity(f"`{call.name}`", label, graph_value, call.outputs64[0], call.outputs32[0], storage)
        if not comparison:
            # A module folded into this one (BatchNorm into the convolution before it) makes the
            # value its own: the pair is judged against the folded module's output.
            for folded in fold_candidates(call, capture, alignment, graph_value.shape):
                fused = compare_fidelity(
                    f"`{call.name}` + `{folded.name}` (folded)", label, graph_value, folded.outputs64[0],
                    folded.outputs32[0], storage,
                )  # fmt: skip
                if fused:
                    comparison = fused
                    break
        modules.append((call, comparison))
    outputs = []
    top = capture.modules.get("")
    for name, graph_value, exact, fp32 in zip(config.outputs, _outputs(evaluation, config), capture.outputs64,
                                              capture.outputs32):  # fmt: skip
        if top is None or graph_value.shape != exact.shape or graph_value.dtype.kind != "f":
            continue
        outputs.append(compare_fidelity(name, label, graph_value, exact, fp32, evaluation.storage_effect(name)))
    return ModuleWalk(
        label, alignment.scheme, named, tuple(modules), tuple(outputs), unaligned,
        top.cls if top else type(model).__name__, _forward_source(model, root),
    )  # fmt: skip


def run_and_walk(
    config: GateConfig, graph: Graph64, graph_proto: Any, runner32: TorchRunner, runner64: TorchRunner,
    case: InputCase, root: Path, values: Sequence[str] = (), *, feeds: Mapping[str, np.ndarray] | None = None,
) -> tuple[CaseRuns, ModuleWalk]:  # fmt: skip
    """One float64 run of ``case`` for two checks: graph fidelity's runs (as ``run_case_in_float64``
    makes them, with the graph's ``values``) and module parity's walk. The two checks share most
    of their cases, and evaluating the graph in float64 is most of each one's cost: here the
    model runs hooked and the graph is evaluated once, for the outputs, ``values`` and every
    aligned module together. ``feeds``: the case's inputs, where the caller has made them."""
    feeds = feeds if feeds is not None else case.materialize(config)
    runs = capture_runs(runner32, runner64, feeds, root=root, case=case, discrete=bool(values))
    capture: Capture = runs.modules
    if capture.outputs64 is None:
        raise RuntimeError(f"the model's float64 run failed: {capture.fp64_unavailable}")
    alignment = align_capture(graph_proto, capture)
    evaluation = graph.infer(feeds, [*values, *aligned_values(alignment)])
    runs = replace(runs, graph64=evaluation, candidate="graph-float64")
    walk = walk_capture(config, graph, graph_proto, runs, describe_case(case), runner32.model, root, alignment=alignment)
    return replace(runs, modules=None), walk.without_activations()


def aligned_values(alignment: Alignment) -> list[str]:
    """The graph values the walk compares: one per aligned module."""
    return [values.output for values in alignment.aligned.values()]


def first_departure(
    config: GateConfig, graph: Graph64, graph_proto: Any, runner32: TorchRunner, runner64: TorchRunner,
    case: InputCase, root: Path,
) -> tuple[Departure | None, dict[str, str]]:  # fmt: skip
    """The first module, in the order PyTorch completed them, whose float64 output leaves its
    fidelity bound on ``case``, and the modules that could not be aligned (by name, with why)."""
    walk = walk_modules(config, graph, graph_proto, runner32, runner64, case, root)
    return walk.departure(), dict(walk.unaligned)


def _forward_source(model: Any, root: Path) -> str:
    """Where the model's own ``forward`` is defined, as ``file:line`` relative to ``root``."""
    forward = type(model).forward
    try:
        return relative_source(inspect.getsourcefile(forward) or "?", inspect.getsourcelines(forward)[1], root)
    except (OSError, TypeError):
        return type(model).__qualname__


def _outputs(evaluation: Any, config: GateConfig) -> list[np.ndarray]:
    return [evaluation.values[name] for name in config.outputs]
