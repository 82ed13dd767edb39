"""A float64 run of a float32 model without a float64 copy of all its weights.

The float64 reference (TorchRunner(dtype="float64")) holds a double copy of the model: twice the
float32 weights, beside them. For a model of 2 GB that is 4.4 GB more, the largest single item of
the gate's memory. Above ``LAZY_FP64_BYTES`` of weights the reference instead casts weights to
float64 as the model runs and drops them when it returns: the same values (every float32 is
exactly a float64), a slice of the double weights resident at a time, at the price of the casts.

The double weights are written into buffers kept from call to call, one per nesting depth of the
units: allocating fresh ones made the kernel hand out and zero new pages for every weight of every
call, and ``.double()`` on a 64 MB tensor took 56 ms against 7 ms to copy it into a kept buffer
(the 2.2 GB model of the slow tier: most of its float64 time). A unit's output that is a view of
those buffers (a module returning its own weight) is copied out before the next unit writes them.

The slices are *units*: the largest modules whose weights stay within ``UNIT_BYTES``; a unit's
whole subtree is cast when it is called, and a module above the units casts only its own
weights. A model that reads a weight of another unit than the one running (some transformers
models cast their inputs to ``child.weight.dtype``) fails in the first call; the reference then
falls back to the double copy, as below the limit, and says so in ``fallback``.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any, Callable

from harness.core.errors import first_line

if TYPE_CHECKING:
    from torch import nn

LAZY_FP64_BYTES = 1 << 30
UNIT_BYTES = 64 << 20


def weight_bytes(model: nn.Module) -> int:
    tensors = itertools.chain(model.parameters(), model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def _floating(module: nn.Module, recurse: bool) -> list[tuple[nn.Module, str]]:
    import torch

    found = []
    for owner in module.modules() if recurse else [module]:
        for name, tensor in itertools.chain(owner._parameters.items(), owner._buffers.items()):
            if tensor is not None and tensor.is_floating_point() and tensor.dtype != torch.float64:
                found.append((owner, name))
    return found


def _units(model: nn.Module, unit_bytes: int) -> list[tuple[nn.Module, bool]]:
    """(module, whole subtree?) for every module that casts when called."""
    if weight_bytes(model) <= unit_bytes:
        return [(model, True)]
    units = [(model, False)] if _floating(model, recurse=False) else []
    for child in model.children():
        units += _units(child, unit_bytes)
    return units


def cast_as_it_runs(model: nn.Module, double_copy: Callable[[nn.Module], nn.Module], unit_bytes: int | None = None) -> nn.Module:
    """``model`` wrapped so that a call with float64 inputs runs in float64, unit by unit.
    ``double_copy(model)`` makes the fallback."""
    from torch import nn

    import torch
    from torch.utils._pytree import tree_map

    units = _units(model, UNIT_BYTES if unit_bytes is None else unit_bytes)
    arenas: list[torch.Tensor] = []  # one float64 buffer per depth of units running inside each other
    depth = [0]

    def arena(numel: int) -> torch.Tensor:
        while len(arenas) <= depth[0]:
            arenas.append(torch.empty(0, dtype=torch.float64))
        if arenas[depth[0]].numel() < numel:
            arenas[depth[0]] = torch.empty(numel, dtype=torch.float64)
        return arenas[depth[0]]

    def to_double(saved: dict[tuple[int, str], Any], entries: list[tuple[nn.Module, str]]) -> None:
        fresh = [(owner, name) for owner, name in entries if (id(owner), name) not in saved]  # re-entry: already double
        flat = [getattr(owner, name) for owner, name in fresh]
        buffer = arena(sum(t.numel() for t in flat if t.is_contiguous()))
        offset = 0
        for (owner, name), original in zip(fresh, flat):
            saved[(id(owner), name)] = (owner, name, original)
            if original.is_contiguous():
                double = buffer[offset:offset + original.numel()].view(original.shape).copy_(original.detach())
                offset += original.numel()
            else:
                double = original.detach().double()
            # setattr, not the dicts: modules such as LSTM keep derived views (_flat_weights)
            # that only their __setattr__ refreshes.
            setattr(owner, name, nn.Parameter(double, requires_grad=False) if name in owner._parameters else double)
        depth[0] += 1

    def own_output(output: Any) -> Any:
        """``output`` with every tensor that lives in a buffer copied out of it."""
        held = {buffer.untyped_storage().data_ptr() for buffer in arenas}

        def copied(value: Any) -> Any:
            if isinstance(value, torch.Tensor) and value.untyped_storage().data_ptr() in held:
                return value.clone()
            return value

        return tree_map(copied, output)

    def restore(saved: dict[tuple[int, str], Any]) -> None:
        for owner, name, original in saved.values():
            setattr(owner, name, original)
        saved.clear()

    def finished(saved: dict[tuple[int, str], Any], output: Any) -> Any:
        restore(saved)
        depth[0] = max(depth[0] - 1, 0)
        return own_output(output)

    class CastAsItRuns(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner
            self.fallback: str | None = None  # why the double copy is used instead, once it is
            self._copy: nn.Module | None = None

        def forward(self, *args: Any, **kwargs: Any) -> Any:
            if self._copy is not None:
                return self._copy(*args, **kwargs)
            handles, pending = [], []
            for unit, whole in units:
                entries = _floating(unit, recurse=whole)
                saved: dict[tuple[int, str], Any] = {}
                pending.append(saved)
                handles.append(unit.register_forward_pre_hook(lambda m, a, e=entries, s=saved: to_double(s, e)))
                handles.append(unit.register_forward_hook(lambda m, a, o, s=saved: finished(s, o), always_call=True))
            try:
                return self.inner(*args, **kwargs)
            except RuntimeError as exc:
                first = first_line(exc, type(exc).__name__)
                self.fallback = f"casting as it runs failed ({first}); a double copy is used"
                self._copy = double_copy(self.inner)
                return self._copy(*args, **kwargs)
            finally:
                for handle in handles:
                    handle.remove()
                for saved in pending:
                    restore(saved)
                depth[0] = 0

    return CastAsItRuns(model).eval()

