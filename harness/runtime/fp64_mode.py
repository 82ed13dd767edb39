"""Float64 that stays float64: a torch function mode for the float64 reference run.

Library code narrows on purpose: transformers computes Llama's rotary embeddings and RMSNorm in
float32 (``.float()``, ``.to(torch.float32)``) even inside a ``.double()`` model, and the exported
graph holds the matching ``Cast(to=FLOAT)``. The float64 graph (harness/runtime/graph64.py) widens those
casts; this mode widens them on the PyTorch side, so both sides are float64 throughout. A cast to
float16 or bfloat16 is left alone: that is a precision the model chose.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch.overrides import TorchFunctionMode


def _widen(value: Any) -> Any:
    return torch.float64 if value is torch.float32 else value


# Calls that turn floats into indices: the graph's ArgMax/ArgMin/TopK. Their float inputs are the
# logits behind a discrete output, which the fidelity check judges (harness/checks/fidelity.py).
_ALWAYS_DISCRETE = {torch.argmax, torch.argmin, torch.topk, torch.Tensor.argmax, torch.Tensor.argmin, torch.Tensor.topk}
_DISCRETE_WITH_DIM = {torch.max, torch.min, torch.Tensor.max, torch.Tensor.min}


def _is_discrete(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    if func in _ALWAYS_DISCRETE:
        return True
    return func in _DISCRETE_WITH_DIM and (isinstance(args[1:2] and args[1], int) or "dim" in kwargs)


class KeepFloat64(TorchFunctionMode):
    """Every request for float32 inside the mode asks for float64 instead (``widen``), and the
    float input of every argmax/argmin/topk call is appended to ``record`` when one is given."""

    def __init__(self, *, widen: bool = True, record: list[Any] | None = None) -> None:
        super().__init__()
        self.widen = widen
        self.record = record
        self.widened = False  # whether the model asked for float32 at all (TorchRunner skips the mode if not)

    def __torch_function__(
        self, func: Callable[..., Any], types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = dict(kwargs or {})
        if self.record is not None and args and _is_discrete(func, args, kwargs):
            if isinstance(args[0], torch.Tensor) and args[0].is_floating_point():
                self.record.append(args[0].detach().cpu().numpy().copy())
        if not self.widen:
            return func(*args, **kwargs)
        if func is torch.Tensor.float:
            self.widened = True
            return args[0].double()
        if kwargs.get("dtype") is torch.float32:
            self.widened = True
            kwargs["dtype"] = torch.float64
        if func in (torch.Tensor.to, torch.Tensor.type) and any(arg is torch.float32 for arg in args):
            self.widened = True
            args = tuple(_widen(arg) for arg in args)
        return func(*args, **kwargs)
