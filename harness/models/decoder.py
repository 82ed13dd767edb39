"""A transformers causal LM with its cache as plain tensors in and out, so that it exports and the
gate can feed each call's ``present`` back as the next call's ``past``.

transformers keeps the cache in a ``DynamicCache`` object, which neither exporter takes as an
input. ``with_flat_cache`` wraps the model: ``forward(input_ids, attention_mask, position_ids,
*past)`` with ``past`` as key, value for layer 0, then layer 1, ..., and it returns ``(logits,
*present)`` in the same order, which is the order ``[[state]]`` tables with ``{i}`` expand to
(docs/stateful.md). Use it as the config's model:

    model = "harness.models.decoder:with_flat_cache"
    model_kwargs = { model = "mypkg.lm:build", model_kwargs = { ... } }
"""

from __future__ import annotations

import importlib
from typing import Any, Mapping

import torch
from torch import nn


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
    """``lm`` with its KV cache as ``2 * layers`` tensors of [batch, kv_heads, past, head_dim]."""

    def __init__(self, lm: nn.Module, layers: int) -> None:
        super().__init__()
        self.lm, self.layers = lm.eval(), layers

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor, *past: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        from transformers import DynamicCache

        if len(past) != 2 * self.layers:
            raise ValueError(f"expected {2 * self.layers} cache tensors (key, value per layer), got {len(past)}")
        cache = DynamicCache()
        for layer in range(self.layers):
            cache.update(past[2 * layer], past[2 * layer + 1], layer)
        result = self.lm(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
            past_key_values=cache, use_cache=True,
        )  # fmt: skip
        present = result.past_key_values
        return (result.logits, *(t for layer in present.layers for t in (layer.keys, layer.values)))


def with_flat_cache(model: str, model_kwargs: Mapping[str, Any] | None = None, layers: int | None = None) -> FlatCacheLM:
    """The causal LM that ``model`` (``"package.module:callable"``) builds, with a flat cache."""
    lm = _load(model, model_kwargs or {})
    return FlatCacheLM(lm, layers if layers is not None else _layers(lm))
