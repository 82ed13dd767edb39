"""A rollout: the model called step after step, each runtime feeding back its own state, recorded
once as values (as case_runs.py records one call) for harness/checks/rollout.py to judge.

The first call starts from a zero state. Where a cache grows, its first ``past`` slots (none where
the config allows an empty cache) are zeros that the attention mask marks as padding, and each
batch row also starts with its own left padding, so rows run at different lengths as a batched
``generate()`` runs them. Every later call makes its other inputs by the config's feed rules
(schema.FeedRule). The tokens follow PyTorch fp32's greedy choice, so that every runtime is
judged on the same sequence; each runtime's own greedy choice is kept for the agreement check.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Mapping

import numpy as np

from harness.core.errors import first_line
from harness.core.inputs import InputCase

if TYPE_CHECKING:
    from harness.core.config import GateConfig

Outputs = Mapping[str, np.ndarray]
Call = Callable[[Mapping[str, np.ndarray]], Outputs]


STARTS = ("empty", "drawn")


@dataclass(frozen=True)
class RolloutCase:
    """What one rollout runs: the first call's sizes and input family (an InputCase), the number of
    calls, each row's left padding in the first call, and how the state starts:

    - ``empty``: a zero state; a cache's ``past`` slots (none where the config allows an empty
      cache) are zeros the mask marks as padding, and rows start left-padded;
    - ``drawn``: the state the case draws, every cache slot valid and positions going on from it:
      a stream or a conversation already under way, with a cache as long as the config allows."""

    case: InputCase
    steps: int
    left_padding: tuple[int, ...] = ()
    start: str = "empty"

    def describe(self) -> str:
        sizes = ", ".join(f"{k}={v}" for k, v in sorted(self.case.sizes.items()))
        padding = f", left padding per row {list(self.left_padding)}" if any(self.left_padding) and self.start == "empty" else ""
        start = ", from a drawn state" if self.start == "drawn" else ""
        return f"{self.steps} calls from {self.case.family} inputs ({sizes}, seed={self.case.seed}){padding}{start}"

    def to_dict(self) -> dict[str, object]:
        return {"case": vars(self.case), "steps": self.steps, "left_padding": list(self.left_padding), "start": self.start}


@dataclass
class Trajectory:
    """One runtime's calls: what each was given and gave, and where it stopped."""

    runtime: str
    feeds: list[Outputs] = field(default_factory=list)  # what each call was given, its own state included
    outputs: list[Outputs] = field(default_factory=list)
    storage: list[Mapping[str, float]] = field(default_factory=list)  # graph64 only: float32 storage's effect
    stopped: str | None = None  # "step 3: ..." where a call raised


@dataclass(frozen=True)
class RolloutRuns:
    rollout: RolloutCase
    stepped: tuple[Outputs, ...]  # each step's non-state feeds (the same for every runtime)
    torch32: Trajectory
    torch64: Trajectory | None
    onnxruntime: Trajectory
    graph64: Trajectory | None


def first_feeds(config: GateConfig, rollout: RolloutCase) -> dict[str, np.ndarray]:
    """The first call's inputs, as ``rollout.start`` says: the case's draws, the state, and the
    mask and positions that go with them."""
    feeds = rollout.case.materialize(config)
    drawn = rollout.start == "drawn"
    if not drawn:
        for pair in config.rollout.states:
            feeds[pair.input] = np.zeros_like(feeds[pair.input])
    grown = {pair.grows for pair in config.rollout.states if pair.grows}
    past = sum(rollout.case.sizes[dim] for dim in grown) if grown else 0
    masks = [rule.input for rule in config.rollout.feeds if rule.rule == "extend"]
    for name in masks:
        mask = np.ones_like(feeds[name])
        if not drawn:
            mask[..., :past] = 0
            for row, padding in enumerate(rollout.left_padding[: mask.shape[0]]):
                mask[row, past : past + min(padding, mask.shape[-1] - past - 1)] = 0  # one token stays valid
        feeds[name] = mask
    for rule in config.rollout.feeds:
        if rule.rule != "advance":
            continue
        width = feeds[rule.input].shape[-1]
        if masks:
            # As transformers computes them for left padding: count the valid positions before each.
            positions = np.clip(np.cumsum(feeds[masks[0]].astype(np.int64), axis=-1) - 1, 0, None)[..., -width:]
        else:  # no mask: every cache slot counts
            positions = np.broadcast_to(past + np.arange(width), feeds[rule.input].shape)
        feeds[rule.input] = positions.astype(feeds[rule.input].dtype)
    return feeds


def next_stepped(
    config: GateConfig, rollout: RolloutCase, step: int, previous: Outputs, reference: Outputs
) -> dict[str, np.ndarray]:
    """Step ``step``'s non-state inputs, from the step before (``previous``) and PyTorch fp32's
    outputs there (``reference``)."""
    specs = {spec.name: spec for spec in config.inputs}
    made: dict[str, np.ndarray] = {}
    for rule in config.rollout.feeds:
        before = previous[rule.input]
        if rule.rule == "argmax":
            assert rule.source is not None
            made[rule.input] = greedy(reference[rule.source])[:, None].astype(before.dtype)
        elif rule.rule == "extend":
            made[rule.input] = np.concatenate([before, np.ones((*before.shape[:-1], 1), before.dtype)], axis=-1)
        elif rule.rule == "advance":
            made[rule.input] = (before[..., -1:] + 1).astype(before.dtype)
        elif rule.rule == "next":
            fresh = InputCase(rollout.case.family, rollout.case.sizes, rollout.case.seed + 7919 * step)
            made[rule.input] = fresh.materialize([specs[rule.input]])[rule.input]
        else:  # "same"
            made[rule.input] = before
    return made


def greedy(logits: np.ndarray) -> np.ndarray:
    """The greedy token per row: the argmax over the last axis, at the last position where the
    output has one ([batch, sequence, vocab] or [batch, vocab])."""
    last = logits[:, -1, :] if logits.ndim == 3 else logits.reshape(logits.shape[0], -1)
    return np.argmax(last, axis=-1)


Evaluate = Callable[[Mapping[str, np.ndarray]], tuple[Outputs, Mapping[str, float]]]


def record_rollout(
    config: GateConfig,
    rollout: RolloutCase,
    torch32: Call,
    onnxruntime: Call,
    *,
    torch64: Call | None = None,
    graph64: Evaluate | None = None,
) -> RolloutRuns:
    """Run ``rollout`` on each runtime, each feeding back its own state outputs. ``graph64`` also
    gives how far float32 storage can move each output (Evaluation.storage_effect)."""
    pairs = config.rollout.states
    feeds = first_feeds(config, rollout)
    stepped: list[Outputs] = [{rule.input: feeds[rule.input] for rule in config.rollout.feeds}]
    first_state = {pair.input: feeds[pair.input] for pair in pairs}
    reference, ours = Trajectory("torch-cpu-float32"), Trajectory("onnxruntime")
    exact = Trajectory("torch-cpu-float64") if torch64 is not None else None
    graph = Trajectory("graph-float64") if graph64 is not None else None
    runtimes: list[tuple[Trajectory, Evaluate]] = [
        (reference, lambda f: (torch32(f), {})), (ours, lambda f: (onnxruntime(f), {})),
    ]
    if exact is not None and torch64 is not None:
        runtimes.append((exact, lambda f: (torch64(f), {})))
    if graph is not None and graph64 is not None:
        runtimes.append((graph, graph64))
    for step in range(rollout.steps):
        if step:
            if reference.stopped is not None:
                break  # PyTorch itself could not go on: nothing to make the next tokens from
            stepped.append(next_stepped(config, rollout, step, stepped[-1], reference.outputs[-1]))
        for trajectory, call in runtimes:
            if trajectory.stopped is not None:
                continue
            state = {pair.input: trajectory.outputs[-1][pair.output] for pair in pairs} if step else first_state
            given = {**stepped[-1], **state}
            try:
                outputs, storage = call(given)
            except Exception as exc:  # e.g. a graph fixed at the trace length, fed a longer cache
                trajectory.stopped = f"step {step}: {type(exc).__name__}: {first_line(exc)}"
                continue
            trajectory.feeds.append(given)
            trajectory.outputs.append(outputs)
            trajectory.storage.append(storage)
    return RolloutRuns(rollout, tuple(stepped), reference, exact, ours, graph)
