"""Per-token latency of a model that carries a cache: the prefill call, and decoding one token per
call with the cache fed back, at several context lengths, PyTorch eager against ONNX Runtime.

ONNX Runtime runs through IOBinding: each call's ``present`` OrtValues are bound as the next
call's ``past`` inputs, so the cache is never copied into numpy and back, as a real decoding loop
keeps it. PyTorch feeds its own output tensors back the same way. Both backends decode the same
number of tokens from the same cache, in alternating rounds (interleave.py), so a burst of load
from another process lands on both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

from harness.core.inputs import InputCase
from harness.runtime.rollout import RolloutCase, next_stepped
from harness.runtime.runners import output_list

if TYPE_CHECKING:
    import onnxruntime

    from harness.core.config import GateConfig
    from harness.runtime.runners import TorchRunner

CONTEXTS = (128, 512, 2048)
DECODE_TOKENS = 16


@dataclass(frozen=True)
class DecodePlan:
    """``tokens`` decoded one per call after a cache of ``context`` positions, at ``batch`` rows;
    and the prefill of ``prompt`` tokens that would make such a cache."""

    context: int
    tokens: int
    batch: int
    prompt: int

    @property
    def label(self) -> str:
        return f"context {self.context}"


def grown_dim(config: GateConfig) -> str | None:
    """The cache's length dimension, if the model's state grows."""
    return next((pair.grows for pair in config.rollout.states if pair.grows), None)


def _token_dim(config: GateConfig) -> str | None:
    """The dimension of the tokens one call takes (the last axis of an ``argmax``-fed input)."""
    specs = {spec.name: spec for spec in config.inputs}
    for rule in config.rollout.feeds:
        if rule.rule in ("argmax", "advance"):
            last = specs[rule.input].shape[-1]
            return last if isinstance(last, str) else None
    return None


def decode_plans(config: GateConfig, batch_dim: str | None, contexts: tuple[int, ...] = CONTEXTS) -> tuple[list[DecodePlan], str]:
    """The plans the config's dimensions allow, and in words the contexts left out and why."""
    grows = grown_dim(config)
    if grows is None:
        return [], "the model's state does not grow (no [[state]] with grows): no per-token latency"
    high = config.dims[grows].high
    kept = [c for c in contexts if c + DECODE_TOKENS <= high]
    left_out = [c for c in contexts if c not in kept]
    token_dim = _token_dim(config)
    prompt_high = config.dims[token_dim].high if token_dim else 1
    batch = 1 if batch_dim is None else max(1, config.dims[batch_dim].low)
    if not kept:  # still measure: at the longest cache the config allows
        kept = [max(high - DECODE_TOKENS, config.dims[grows].low)]
    notes = []
    if left_out:
        notes.append(f"contexts {left_out} left out: {grows} goes up to {high} in the config (decoding {DECODE_TOKENS} tokens)")
    if token_dim is not None and any(c > prompt_high for c in kept):
        notes.append(f"prefill prompts are at most {prompt_high} tokens: {token_dim} goes up to {prompt_high} in the config")
    note = "; ".join(notes)
    return [DecodePlan(c, DECODE_TOKENS, batch, min(c, prompt_high)) for c in kept], note


def start_feeds(config: GateConfig, plan: DecodePlan, *, prefill: bool, batch_dim: str | None) -> dict[str, np.ndarray]:
    """The first call: a cache of ``plan.context`` positions (drawn values, all valid) and one new
    token; or, for ``prefill``, ``plan.prompt`` tokens onto an empty cache (one masked slot where
    the config does not allow a cache of length 0)."""
    grows, token_dim = grown_dim(config), _token_dim(config)
    assert grows is not None
    sizes = dict(config.trace_sizes)
    empty = config.dims[grows].low  # 0 where the config allows an empty cache, else one masked slot
    sizes[grows] = empty if prefill else plan.context
    if token_dim is not None:
        sizes[token_dim] = plan.prompt if prefill else 1
    if batch_dim is not None:
        sizes[batch_dim] = plan.batch
    feeds = InputCase("uniform", sizes, 0).materialize(config)
    for rule in config.rollout.feeds:
        value = feeds[rule.input]
        if rule.rule == "extend":
            value = np.ones_like(value)
            if prefill:
                value[..., :empty] = 0  # the empty cache's slots
        elif rule.rule == "advance":
            start = 0 if prefill else plan.context
            value = np.broadcast_to(np.arange(start, start + value.shape[-1]), value.shape).astype(value.dtype).copy()
        feeds[rule.input] = value
    if prefill:
        for pair in config.rollout.states:
            feeds[pair.input] = np.zeros_like(feeds[pair.input])
    return feeds


def _next(config: GateConfig, step: int, stepped: Mapping[str, np.ndarray], logits: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The next call's other inputs by the feed rules; a ``next`` input drawn at its current sizes."""
    sizes = {
        dim: int(stepped[spec.name].shape[axis])
        for spec in config.inputs if spec.name in stepped
        for axis, dim in enumerate(spec.shape) if isinstance(dim, str) and dim in config.dims
    }  # fmt: skip
    return next_stepped(config, RolloutCase(InputCase("uniform", sizes, 0), step + 1), step, stepped, logits)


def _sources(config: GateConfig) -> list[str]:
    return [rule.source for rule in config.rollout.feeds if rule.rule == "argmax" and rule.source is not None]


def ort_decoder(session: onnxruntime.InferenceSession, config: GateConfig, feeds: Mapping[str, np.ndarray], tokens: int) -> Callable[[], None]:
    """Decode ``tokens`` calls from ``feeds`` on ``session`` with IOBinding, the cache bound
    from one call's outputs to the next call's inputs."""
    pairs, sources = config.rollout.states, _sources(config)
    stepped_names = [rule.input for rule in config.rollout.feeds]
    outputs = [o.name for o in session.get_outputs()]

    def decode() -> None:
        binding = session.io_binding()
        stepped = {name: feeds[name] for name in stepped_names}
        state: dict[str, Any] = {pair.input: feeds[pair.input] for pair in pairs}
        for step in range(tokens):
            for name, value in stepped.items():
                binding.bind_cpu_input(name, np.ascontiguousarray(value))
            for name, value in state.items():
                if isinstance(value, np.ndarray):
                    binding.bind_cpu_input(name, value)
                else:
                    binding.bind_ortvalue_input(name, value)
            for name in outputs:
                binding.bind_output(name, "cpu")
            session.run_with_iobinding(binding)
            values = dict(zip(outputs, binding.get_outputs()))
            logits = {source: values[source].numpy() for source in sources}
            state = {pair.input: values[pair.output] for pair in pairs}
            stepped = _next(config, step + 1, stepped, logits)
            binding.clear_binding_inputs()
            binding.clear_binding_outputs()

    return decode


def torch_decoder(runner: TorchRunner, config: GateConfig, feeds: Mapping[str, np.ndarray], tokens: int) -> Callable[[], None]:
    """Decode ``tokens`` calls from ``feeds`` in PyTorch eager, its output tensors fed back."""
    import torch

    pairs, sources = config.rollout.states, _sources(config)
    names, outputs = runner.input_names, runner.output_names
    stepped_names = [rule.input for rule in config.rollout.feeds]

    def decode() -> None:
        stepped = {name: feeds[name] for name in stepped_names}
        state = {pair.input: torch.from_numpy(feeds[pair.input]) for pair in pairs}
        for step in range(tokens):
            tensors = [state[name] if name in state else torch.from_numpy(np.ascontiguousarray(stepped[name])) for name in names]
            values = dict(zip(outputs, output_list(runner.forward(tensors), outputs)))
            logits = {source: values[source].numpy() for source in sources}
            state = {pair.input: values[pair.output] for pair in pairs}
            stepped = _next(config, step + 1, stepped, logits)

    return decode


def tokens_per_second(batch: int, seconds_per_token: float) -> float:
    return batch / seconds_per_token if seconds_per_token > 0 else float("inf")

