"""A transformers causal LM with its cache as plain tensors in and out, so that it exports and the
gate can feed each call's ``present`` back as the next call's ``past``.

transformers keeps the cache in a ``DynamicCache`` object, which neither exporter takes as an
input. ``with_flat_cache`` wraps the model: ``forward(input_ids, attention_mask, position_ids,
*past)`` (its ``inputs``, these three by default) with ``past`` as key, value for layer 0, then
layer 1, ..., and it returns ``(logits, *present)`` in the same order, which is the order ``[[state]]`` tables with ``{i}`` expand to
(docs/stateful.md). Use it as the config's model:

    model = "harness.models.decoder:with_flat_cache"
    model_kwargs = { model = "mypkg.lm:build", model_kwargs = { ... } }
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Mapping, Sequence

import torch
from torch import nn


DEFAULT_INPUTS = ("input_ids", "attention_mask", "position_ids")


def _load(target: str, kwargs: Mapping[str, Any]) -> nn.Module:
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"model must look like 'package.module:callable', got {target!r}")
    return getattr(importlib.import_module(module_name), attribute)(**kwargs)


def _layers(model: nn.Module) -> int:
    config = getattr(model, "config", None)
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None)
    if not isinstance(layers, int):
        raise ValueError(f"{type(model).__name__} has no config.num_hidden_layers: pass layers = N in model_kwargs")
    return layers


class FlatCacheLM(nn.Module):
    """``lm`` with its KV cache as ``2 * layers`` tensors of [batch, kv_heads, past, head_dim]
    after the ``inputs`` it takes by name (``input_ids``, ``attention_mask``, ``position_ids``)."""

    def __init__(self, lm: nn.Module, layers: int, inputs: tuple[str, ...] = DEFAULT_INPUTS) -> None:
        super().__init__()
        self.lm, self.layers, self.inputs = lm.eval(), layers, tuple(inputs)
        parameters = inspect.signature(lm.forward).parameters
        # transformers 5 calls the cache argument and output `cache`; 4.x called them `past_key_values`.
        self.cache_argument = "cache" if "cache" in parameters else "past_key_values"

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from transformers import DynamicCache

        named, past = tensors[: len(self.inputs)], tensors[len(self.inputs) :]
        if len(past) != 2 * self.layers:
            raise ValueError(
                f"{type(self.lm).__name__} takes {list(self.inputs)} and then {2 * self.layers} cache tensors "
                f"(key, value for each of {self.layers} layers), got {len(tensors)} inputs: make the config's "
                f"[[inputs]] these {len(self.inputs)} (or pass inputs = [...] in model_kwargs) and [[state]] layers = {self.layers}"
            )
        cache = DynamicCache()
        for layer in range(self.layers):
            cache.update(past[2 * layer], past[2 * layer + 1], layer)
        result = self.lm(**dict(zip(self.inputs, named)), **{self.cache_argument: cache}, use_cache=True)
        present = getattr(result, "cache", None) or result.past_key_values
        return (result.logits, *_flat(present))


def _flat(cache: object) -> list[torch.Tensor]:
    if hasattr(cache, "layers"):  # transformers 5: one layer object per layer
        return [t for layer in cache.layers for t in (layer.keys, layer.values)]
    if hasattr(cache, "key_cache"):  # transformers 4.x DynamicCache
        return [t for pair in zip(cache.key_cache, cache.value_cache) for t in pair]
    return [t for pair in cache for t in pair]  # type: ignore[attr-defined]  # a legacy tuple of tuples


def with_flat_cache(
    model: str, model_kwargs: Mapping[str, Any] | None = None, layers: int | None = None,
    inputs: Sequence[str] = DEFAULT_INPUTS,
) -> FlatCacheLM:  # fmt: skip
    """The causal LM that ``model`` (``"package.module:callable"``) builds, with a flat cache.
    ``inputs``: the LM's arguments the config declares before the cache, in order."""
    lm = _load(model, model_kwargs or {})
    return FlatCacheLM(lm, layers if layers is not None else _layers(lm), tuple(inputs))


class FlatCacheSeq2Seq(nn.Module):
    """An encoder-decoder's decoder (T5, BART, Whisper shaped) with its self-attention cache as
    ``2 * layers`` tensors: ``forward(decoder_input_ids, encoder_hidden_states,
    encoder_attention_mask, *past)`` returns ``(logits, *present)``. The encoder runs once, outside
    (its output is an input the rollout feeds ``same``); cross-attention is computed from it on
    every call, so the graph carries no cross-attention cache."""

    def __init__(self, model: nn.Module, layers: int) -> None:
        super().__init__()
        self.model, self.layers = model.eval(), layers
        parameters = inspect.signature(model.forward).parameters
        self.cache_argument = "cache" if "cache" in parameters else "past_key_values"

    def forward(
        self, decoder_input_ids: torch.Tensor, encoder_hidden_states: torch.Tensor, encoder_attention_mask: torch.Tensor,
        *past: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:  # fmt: skip
        from transformers import DynamicCache, EncoderDecoderCache
        from transformers.modeling_outputs import BaseModelOutput

        if len(past) != 2 * self.layers:
            raise ValueError(
                f"{type(self.model).__name__} takes decoder_input_ids, encoder_hidden_states, encoder_attention_mask and "
                f"then {2 * self.layers} cache tensors (key, value for each of {self.layers} layers), got {3 + len(past)} inputs"
            )
        own = DynamicCache()
        for layer in range(self.layers):
            own.update(past[2 * layer], past[2 * layer + 1], layer)
        result = self.model(
            encoder_outputs=BaseModelOutput(last_hidden_state=encoder_hidden_states), attention_mask=encoder_attention_mask,
            decoder_input_ids=decoder_input_ids, **{self.cache_argument: EncoderDecoderCache(own, DynamicCache())},
            use_cache=True,
        )  # fmt: skip
        cache = getattr(result, "cache", None) or result.past_key_values
        return (result.logits, *_flat(cache.self_attention_cache))


def seq2seq_with_flat_cache(model: str, model_kwargs: Mapping[str, Any] | None = None, layers: int | None = None) -> FlatCacheSeq2Seq:
    """The encoder-decoder that ``model`` builds, its decoder with a flat self-attention cache."""
    built = _load(model, model_kwargs or {})
    config = getattr(built, "config", None)
    found = getattr(config, "num_decoder_layers", None) or getattr(config, "decoder_layers", None)
    if layers is None and not isinstance(found, int):
        raise ValueError(f"{type(built).__name__} has no config.num_decoder_layers: pass layers = N in model_kwargs")
    return FlatCacheSeq2Seq(built, layers if layers is not None else found)
