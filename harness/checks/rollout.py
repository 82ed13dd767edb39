"""Rollout parity: a model that carries state (a KV cache, a recurrent ``h``) judged as it runs,
call after call, each runtime feeding back its own state (harness/runtime/rollout.py records it).

Every step's outputs, the state outputs included, are judged by parity's rules: graph fidelity
(the graph in float64 against PyTorch in float64) where the gate can evaluate the graph, and ONNX
Runtime's accuracy. Defects that one call hides show here at the step where they start: a
position not advanced, a mask not extended, a state taken from the wrong layer or ignored, a cache
cut at the trace length. The report also says how the error grows with the step (the drift) and,
for decoders, where ONNX Runtime's greedy token first differs from PyTorch's and whether PyTorch's
own top-2 logits were a tie there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from harness.checks.declared import declare_check
from harness.compare.fidelity import compare_fidelity
from harness.compare.rule import judge_output, judge_runtime

from harness.core.inputs import InputCase
from harness.runtime.rollout import STARTS, RolloutCase, greedy

if TYPE_CHECKING:
    from hypothesis import strategies as st

    from harness.core.config import GateConfig
    from harness.runtime.rollout import RolloutRuns, Trajectory


def with_state(gate: Any) -> bool:
    """The config declares [[state]]: the model carries state across calls."""
    return gate.config.rollout.declared


CHECK = declare_check("rollout", required=with_state, listed=False, order=45)


def _rounded(value: float) -> float | str:
    return float(f"{value:.4g}") if np.isfinite(value) else str(value)


@dataclass(frozen=True)
class Drift:
    """How one output's error grows with the step: its ratio to the tolerance bound per step, the
    least-squares slope of that ratio, and the step at which the line would reach the bound."""

    output: str
    ratios: tuple[float, ...]

    @property
    def slope(self) -> float:
        if len(self.ratios) < 2:
            return 0.0
        steps = np.arange(len(self.ratios), dtype=float)
        return float(np.polyfit(steps, np.asarray(self.ratios, float), 1)[0])

    @property
    def crossing_step(self) -> float | None:
        """Where the fitted line reaches 1 (the bound); None where the error does not grow beyond
        its own scatter: a rise over the rollout under three standard deviations of the residuals
        is rounding noise, and a line through noise would name a step that means nothing."""
        if len(self.ratios) < 2 or not np.all(np.isfinite(self.ratios)):
            return None
        steps, ratios = np.arange(len(self.ratios), dtype=float), np.asarray(self.ratios, float)
        slope, intercept = np.polyfit(steps, ratios, 1)
        scatter = float(np.std(ratios - (slope * steps + intercept)))
        rise = slope * steps[-1]
        if slope <= 1e-9 * float(np.abs(ratios).max()) or rise <= 3 * scatter:
            return None
        return float(max((1.0 - intercept) / slope, 0.0))

    def to_dict(self) -> dict[str, Any]:
        crossing = self.crossing_step
        return {"output": self.output, "ratios": [_rounded(r) for r in self.ratios], "slope": self.slope,
                "crossing_step": None if crossing is None else round(crossing, 1)}  # fmt: skip


@dataclass(frozen=True)
class GreedyAgreement:
    """ONNX Runtime's greedy tokens against PyTorch fp32's, step by step on the same sequence."""

    source: str
    steps: int
    first_difference: int | None = None  # the step where a row's token first differs
    row: int | None = None
    gap: float | None = None  # PyTorch's top-2 logit gap there (float64 where there is a run)
    noise: float | None = None  # the gap a tie may have: PyTorch's own fp32 noise there, or the bound
    tie: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))

    def __str__(self) -> str:
        if self.first_difference is None:
            return f"greedy tokens from {self.source}: ONNX Runtime agrees with PyTorch on all {self.steps} steps"
        what = "a tie within PyTorch's own noise" if self.tie else "beyond PyTorch's own noise: a defect"
        return (
            f"greedy tokens from {self.source}: ONNX Runtime first differs at step {self.first_difference} (row {self.row}), "
            f"where PyTorch's top-2 logits are {self.gap:.3g} apart ({what}, noise {self.noise:.3g})"
        )


@dataclass(frozen=True)
class RolloutResult:
    rollout: str
    steps: int  # calls PyTorch made
    blocks: tuple[str, ...] = ()
    drift: tuple[Drift, ...] = ()
    fidelity_ratios: tuple[float, ...] = ()  # per step, the worst fidelity error / bound over every output
    greedy: tuple[GreedyAgreement, ...] = ()
    findings: tuple[str, ...] = ()
    fidelity_judged: bool = False
    # The first step at which the graph in float64 left the model, and where in the model it departs.
    fidelity_step: int | None = None
    departure: str = ""

    def __bool__(self) -> bool:
        return not self.blocks

    def __str__(self) -> str:
        head = f"rollout parity on {self.rollout}"
        if not self.blocks:
            return f"{head}: every step within bounds"
        more = f" (and {len(self.blocks) - 3} more)" if len(self.blocks) > 3 else ""
        where = f"; at step {self.fidelity_step} {self.departure}" if self.departure else ""
        return f"{head}: " + "; ".join(self.blocks[:3]) + more + where

    def to_dict(self) -> dict[str, Any]:
        return {
            "rollout": self.rollout, "steps": self.steps, "passed": bool(self), "blocks": list(self.blocks),
            "drift": [d.to_dict() for d in self.drift], "fidelity_ratios": [_rounded(r) for r in self.fidelity_ratios],
            "greedy": [g.to_dict() for g in self.greedy], "findings": list(self.findings),
            "fidelity_judged": self.fidelity_judged, "fidelity_step": self.fidelity_step, "departure": self.departure,
        }  # fmt: skip


@dataclass
class _Judging:
    blocks: list[str] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    ratios: dict[str, list[float]] = field(default_factory=dict)
    fidelity: list[float] = field(default_factory=list)
    fidelity_step: int | None = None


def _state_outputs(config: GateConfig) -> set[str]:
    return {pair.output for pair in config.rollout.states}


def _describe(name: str, states: set[str], operators: Mapping[str, str]) -> str:
    made_by = f", made by {operators[name]}" if name in operators else ""
    return f"{'state output ' if name in states else ''}{name}{made_by}"


def judge_rollout(runs: RolloutRuns, config: GateConfig, *, operators: Mapping[str, str] | None = None) -> RolloutResult:
    """Judge each step of ``runs`` by parity's rules, and the greedy agreement of each ``argmax``
    feed. A step blocks where the graph is not the model (fidelity), where ONNX Runtime is beyond
    both the bound and PyTorch's own noise, where a state output has another shape than PyTorch's,
    or where a runtime could not make the call at all."""
    operators = operators or {}
    states = _state_outputs(config)
    judging = _Judging()
    reference = runs.torch32.outputs
    if runs.torch32.stopped:
        judging.blocks.append(f"PyTorch itself failed at {runs.torch32.stopped}")
    for trajectory in (runs.onnxruntime, runs.graph64):
        if trajectory is not None and trajectory.stopped and len(trajectory.outputs) < len(reference):
            judging.blocks.append(f"{trajectory.runtime} could not make the call at {trajectory.stopped}")
    for step, expected in enumerate(reference):
        _judge_step(step, expected, runs, config, states, operators, judging)
        judging.blocks += _fixed_state_changed(step, runs, config)
    greedy = tuple(
        _greedy_agreement(rule.source, runs, config)
        for rule in config.rollout.feeds
        if rule.rule == "argmax" and rule.source is not None
    )
    judging.blocks += [str(g) for g in greedy if g.first_difference is not None and not g.tie]
    drift = tuple(Drift(name, tuple(values)) for name, values in judging.ratios.items())
    return RolloutResult(
        runs.rollout.describe(), len(reference), tuple(judging.blocks), drift, tuple(judging.fidelity), greedy,
        tuple(dict.fromkeys(judging.findings)), runs.graph64 is not None, judging.fidelity_step,
    )  # fmt: skip


def _fixed_state_changed(step: int, runs: RolloutRuns, config: GateConfig) -> list[str]:
    """A state declared without ``grows`` must come back at the shape it went in; one that grows
    is a cache, and must say along which dimension."""
    fed, given = runs.torch32.feeds, runs.torch32.outputs
    return [
        f"step {step}: state output {pair.output} has shape {list(given[step][pair.output].shape)} from PyTorch, but its "
        f"input {pair.input} had {list(fed[step][pair.input].shape)}: a state that grows is a cache, declare grows = \"<its length>\""
        for pair in config.rollout.states
        if not pair.grows and step < len(fed) and given[step][pair.output].shape != fed[step][pair.input].shape
    ]


def _at(trajectory: Trajectory | None, step: int) -> Mapping[str, np.ndarray] | None:
    if trajectory is None or step >= len(trajectory.outputs):
        return None
    return trajectory.outputs[step]


def _judge_step(
    step: int,
    expected: Mapping[str, np.ndarray],
    runs: RolloutRuns,
    config: GateConfig,
    states: set[str],
    operators: Mapping[str, str],
    judging: _Judging,
) -> None:
    actual, exact, graph = _at(runs.onnxruntime, step), _at(runs.torch64, step), _at(runs.graph64, step)
    storage = runs.graph64.storage[step] if graph is not None and runs.graph64 is not None else {}
    valid = _valid_positions(config, runs.stepped[step])
    worst_fidelity = 0.0
    for name in config.outputs:
        described = _describe(name, states, operators)
        reference = expected[name]
        ours = actual[name] if actual is not None else None
        if ours is not None and ours.shape != reference.shape:
            judging.blocks.append(
                f"step {step}: {described} has shape {list(ours.shape)} from ONNX Runtime, {list(reference.shape)} from PyTorch"
            )
            ours = None
        if reference.dtype.kind != "f":
            if ours is not None and not np.array_equal(ours, reference):
                judging.blocks.append(f"step {step}: {described} differs from PyTorch's in {int(np.count_nonzero(ours != reference))} values")
            continue
        exact_values = exact[name] if exact is not None and exact[name].shape == reference.shape else None
        graph_values = graph[name] if graph is not None and graph[name].shape == reference.shape else None
        keep = _kept(reference, valid)
        if keep is not None:  # padded positions are don't-care: nothing attends to them later
            reference, ours, exact_values, graph_values = (
                None if values is None else values[keep] for values in (reference, ours, exact_values, graph_values)
            )
        assert reference is not None
        if graph_values is not None and exact_values is not None:
            comparison = compare_fidelity(name, f"step {step}", graph_values, exact_values, reference, float(storage.get(name, 0.0)))
            worst_fidelity = max(worst_fidelity, comparison.ratio)
            if not comparison:
                judging.blocks.append(f"step {step}: graph fidelity, {described}: {comparison}")
                judging.fidelity_step = step if judging.fidelity_step is None else judging.fidelity_step
        if ours is None:
            continue
        tolerance = config.tolerance_for(name)
        context = f"step {step} of {runs.rollout.describe()}"
        if graph is not None and exact_values is not None:
            judged = judge_runtime(name, ours.ravel(), reference.ravel(), exact_values.ravel(), tolerance,
                                   operator=operators.get(name, ""), context=context)  # fmt: skip
        else:
            judged = judge_output(name, ours, reference, exact_values, tolerance, context=context)
        judging.ratios.setdefault(name, []).append(judged.comparison.bound_ratio)
        judging.findings += [f"step {step}: {finding.message}" for finding in judged.findings if finding.kind == "runtime"][:1]
        if not judged.comparison:
            judging.blocks.append(f"step {step}: ONNX Runtime, {described}: {judged.comparison.reason or 'beyond its bound'}")
    if graph is not None:
        judging.fidelity.append(worst_fidelity)


def _valid_positions(config: GateConfig, stepped: Mapping[str, np.ndarray]) -> np.ndarray | None:
    """This call's attention mask ([batch, cache + tokens], nonzero where valid), if it has one."""
    mask = next((rule.input for rule in config.rollout.feeds if rule.rule == "extend"), None)
    return None if mask is None else np.asarray(stepped[mask]) != 0


def _kept(output: np.ndarray, valid: np.ndarray | None) -> np.ndarray | None:
    """Where ``output`` holds valid positions: its cache axis (the mask's length) or its token
    axis (the mask's last columns) over the batch; None where it has neither or all are valid."""
    if valid is None or output.ndim < 3 or output.shape[0] != valid.shape[0] or valid.all():
        return None
    total = valid.shape[1]
    for axis in range(output.ndim - 2, 0, -1):  # not the batch, not the features
        size = output.shape[axis]
        if size == total or size < total:
            rows = valid if size == total else valid[:, total - size :]
            if rows.all():
                return None
            shape = [1] * output.ndim
            shape[0], shape[axis] = rows.shape
            return np.broadcast_to(rows.reshape(shape), output.shape)
    return None


def _greedy_agreement(source: str, runs: RolloutRuns, config: GateConfig) -> GreedyAgreement:
    reference = runs.torch32.outputs
    tolerance = config.tolerance_for(source)
    for step, expected in enumerate(reference):
        actual = _at(runs.onnxruntime, step)
        if actual is None or actual[source].shape != expected[source].shape:
            break  # judged above: the call or the shape
        ours, theirs = greedy(actual[source]), greedy(expected[source])
        rows = np.flatnonzero(ours != theirs)
        if not rows.size:
            continue
        row = int(rows[0])
        exact = _at(runs.torch64, step)
        logits = _last(exact[source] if exact is not None else expected[source])[row]
        top = np.sort(logits)[-2:]
        gap = float(top[1] - top[0])
        # A tie: PyTorch's top two lie within what parity allows a runtime at those logits, its
        # fixed bound or noise_factor times PyTorch's own fp32 error, so either token is right.
        allowed = tolerance.atol + tolerance.rtol * float(np.abs(top[1]))
        if exact is not None:
            noise32 = float(np.abs(_last(expected[source])[row] - _last(exact[source])[row]).max())
            allowed = max(allowed, tolerance.noise_factor * noise32)
        return GreedyAgreement(source, len(reference), step, row, gap, allowed, gap <= allowed)
    return GreedyAgreement(source, len(reference))


def _last(logits: np.ndarray) -> np.ndarray:
    return logits[:, -1, :] if logits.ndim == 3 else logits.reshape(logits.shape[0], -1)


def full_rollout(config: GateConfig, batch_dim: str | None) -> RolloutCase:
    """The fixed rollout whose drift the report shows: the full number of steps from the smallest
    cache (the most growth), two rows where the batch allows, the second one left-padded."""
    sizes = dict(config.trace_sizes)
    for pair in config.rollout.states:
        if pair.grows:
            sizes[pair.grows] = config.dims[pair.grows].low
    rows = 1
    if batch_dim is not None:
        rows = sizes[batch_dim] = min(max(2, config.dims[batch_dim].low), config.dims[batch_dim].high)
    padding = (0, 1, *([0] * (rows - 2))) if rows >= 2 and _has_mask(config) else ()
    return RolloutCase(InputCase("uniform", sizes, 0), config.rollout.steps, padding)


def _has_mask(config: GateConfig) -> bool:
    """Left padding needs a mask to mark it (an ``extend`` feed)."""
    return any(rule.rule == "extend" for rule in config.rollout.feeds)


def rollout_cases(config: GateConfig, batch_dim: str | None) -> st.SearchStrategy[RolloutCase]:
    """Rollouts as callers make them: a drawn batch, prompt and cache length (up to the longest the
    config allows, past the trace length), 1 to ``steps`` calls; from an empty state with rows
    left-padded by different amounts, or from a drawn one, every slot of its cache valid."""
    from hypothesis import strategies as st

    from harness.core.strategies import input_cases

    @st.composite
    def draw(data: Any) -> RolloutCase:
        case = data(input_cases(config, families=("normal", "uniform")))
        rows = case.sizes.get(batch_dim, 1) if batch_dim is not None else 1
        steps = data(st.integers(1, config.rollout.steps))
        start = data(st.sampled_from(STARTS))
        if rows < 2 or not _has_mask(config) or start == "drawn":
            return RolloutCase(case, steps, start=start)
        padding = data(st.lists(st.integers(0, 3), min_size=rows - 1, max_size=rows - 1))
        return RolloutCase(case, steps, (0, *padding))

    return draw()


def summary_lines(entry: Mapping[str, Any]) -> list[str]:
    """summary.md's rollout section from gate.json's ``parity.rollout``."""
    lines = [f"On {entry['rollout']}: " + ("every step within bounds." if entry["passed"] else "blocked.")]
    lines += [f"- {block}" for block in entry["blocks"][:5]]
    if entry.get("departure"):
        lines += [f"- At step {entry['fidelity_step']}, {entry['departure']}."]
    if entry.get("drift"):
        lines += ["", "| output | bound ratio at step 0 | at the last step | slope per step | would reach the bound at step |",
                  "| --- | --- | --- | --- | --- |"]  # fmt: skip
        for drift in entry["drift"]:
            ratios = drift["ratios"] or [float("nan")]
            crossing = drift["crossing_step"]
            lines.append(
                f"| {drift['output']} | {ratios[0]:.3g} | {ratios[-1]:.3g} | {drift['slope']:.3g} | "
                f"{'no growth beyond its scatter' if crossing is None else f'{crossing:.0f}'} |"
            )
    if entry.get("fidelity_ratios"):
        ratios = entry["fidelity_ratios"]
        lines += ["", f"Graph fidelity per step, worst error / bound: step 0 {ratios[0]:.3g}, worst {max(ratios):.3g}."]
    for agreement in entry.get("greedy", []):
        lines += ["", str(GreedyAgreement(**agreement)) + "."]
    if entry.get("findings"):  # the runtime's precision where the graph is the model: said, not blocked
        lines += ["", "Findings (ONNX Runtime's fp32 kernels, not blocks):", "", *[f"- {f}" for f in entry["findings"][:3]]]
    return lines
