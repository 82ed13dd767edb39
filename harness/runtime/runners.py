"""Runners execute a model on named numpy inputs and return named numpy outputs.

As in Polygraphy: the public ``infer()`` validates the feeds, then ``infer_impl()`` runs them, so
a mismatch between the config and the model is one clear error rather than a framework crash.
"""

from __future__ import annotations

import copy
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from harness.core.errors import ArtifactError, GateError, first_line
from harness.runtime import fp64_lazy

if TYPE_CHECKING:
    import numpy as np
    import onnxruntime
    from torch import nn


_THREADS_OVERRIDE: int | None = None

# Fatal only: ONNX Runtime's errors come back as exceptions, which the gate reports in one line;
# its own "[E:onnxruntime:, sequential_executor.cc ...]" lines on stderr would say it twice.
ORT_LOG_SEVERITY = 4


def default_threads() -> int:
    """Threads both frameworks use: the cores this process may run on, or its share of them when
    several gate processes (xdist workers) run side by side (set_default_threads)."""
    return _THREADS_OVERRIDE or max(1, len(os.sched_getaffinity(0)))


def set_default_threads(threads: int | None) -> None:
    """This process's share of the cores; None goes back to all of them."""
    global _THREADS_OVERRIDE
    _THREADS_OVERRIDE = threads


def named_outputs(result: Any) -> dict[str, Any] | None:
    """The outputs of a model that names them: a dict (or transformers' ModelOutput), a named
    tuple or a dataclass. None for plain tensors and tuples, whose outputs only have positions."""
    import dataclasses

    if isinstance(result, Mapping):
        return dict(result)
    if isinstance(result, tuple) and hasattr(result, "_fields"):
        return dict(zip(result._fields, result))
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        return {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}
    return None


def _flatten(result: Any) -> list[Any]:
    if isinstance(result, (tuple, list)):
        return [leaf for item in result for leaf in _flatten(item)]
    named = named_outputs(result)
    if named is not None:
        return [leaf for item in named.values() if item is not None for leaf in _flatten(item)]
    return [result]


def output_list(result: Any, names: Sequence[str] = ()) -> list[Any]:
    """A model's outputs as a flat list in the config's order.

    Named outputs are taken by name, so a model returning ``{"b": ..., "a": ...}`` with
    ``outputs = ["a", "b"]`` gives a then b, not the dict's order. Unnamed ones (tensors, nested
    tuples/lists) are taken in order, flattened.
    """
    named = named_outputs(result)
    if named is not None and names and all(name in named for name in names):
        return [named[name] for name in names]
    return _flatten(result)


def output_name_problem(result: Any, names: Sequence[str]) -> str | None:
    """Why the config's output names cannot be found among the ones the model gives, if so."""
    named = named_outputs(result)
    if named is None:
        return None
    missing = [name for name in names if name not in named]
    if not missing:
        return None
    return (
        f"the model names its outputs {list(named)}, but the config's outputs {missing} are not among them; "
        f"set outputs to names the model returns"
    )


class Runner(ABC):
    name: str = "runner"

    def __init__(self, input_names: Sequence[str], output_names: Sequence[str]) -> None:
        self.input_names = tuple(input_names)
        self.output_names = tuple(output_names)

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Release what the runner holds; most hold nothing that needs it."""

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [n for n in self.input_names if n not in feeds]
        extra = [n for n in feeds if n not in self.input_names]
        if missing or extra:
            raise GateError(
                f"{self.name}: feeds {sorted(feeds)} do not match the model inputs "
                f"{list(self.input_names)} (missing {missing}, unexpected {extra})"
            )
        outputs = self.infer_impl(feeds)
        if len(outputs) != len(self.output_names):
            raise GateError(
                f"{self.name}: model returned {len(outputs)} outputs, "
                f"the config names {len(self.output_names)}: {list(self.output_names)}"
            )
        return dict(zip(self.output_names, outputs))

    @abstractmethod
    def infer_impl(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]: ...


def _keeping_attributes(source: Any, stand_in_class: type) -> Any:
    """A module of ``stand_in_class`` (a Conv2d subclass with its own forward) that keeps every
    attribute, parameter, buffer and hook of ``source``.

    Library code inspects the modules it calls: transformers' MobileNetV2 reads ``.stride``,
    ``.kernel_size`` and ``.dilation`` of a convolution for TF-style padding, others read
    ``.weight.dtype`` or test ``isinstance(m, nn.Conv2d)``. A stand-in that lacked any of them
    would make the float64 run fail, and the noise check with it. The tensors are shared with
    ``source``; the containers are copied, so that what the stand-in adds stays its own.
    """
    stand_in = stand_in_class.__new__(stand_in_class)
    stand_in.__dict__.update(
        {key: copy.copy(value) if isinstance(value, (dict, set)) else value for key, value in vars(source).items()}
    )
    return stand_in


def depthwise_shifted(x: Any, taps: Any, bias: Any, padding: Sequence[int]) -> Any:
    """A depthwise 2-D convolution (stride 1) as k*k shifted multiply-adds on channels-last
    memory: ``taps`` is (kh, kw, C). Returns NCHW seen over channels-last memory."""
    import torch

    n, c, h, w = x.shape
    kh, kw = taps.shape[:2]
    ph, pw = padding
    padded = x.new_zeros(n, h + 2 * ph, w + 2 * pw, c)
    padded[:, ph:ph + h, pw:pw + w] = x.permute(0, 2, 3, 1)
    height, width = h + 2 * ph - kh + 1, w + 2 * pw - kw + 1
    if bias is None:
        out = padded[:, :height, :width] * taps[0, 0]
    else:
        out = torch.addcmul(bias, padded[:, :height, :width], taps[0, 0])
    for i in range(kh):
        for j in range(kw):
            if i or j:
                out.addcmul_(padded[:, i:i + height, j:j + width], taps[i, j])
    return out.permute(0, 3, 1, 2)


def _shifted_depthwise(conv: Any) -> Any:
    """A float64 stand-in for a depthwise Conv2d: the same sum, as k*k shifted multiply-adds on
    channels-last memory.

    PyTorch has no fast float64 kernel for grouped convolutions and loops over the groups
    (ConvNeXt's 7x7 depthwise convs made 60% of a 6x slower fp64 pass). Here each tap is one
    fused ``addcmul_`` over rows of W*C contiguous values, with no temporaries; the output is
    channels-last memory seen as NCHW, so the ``permute(0, 2, 3, 1)`` ConvNeXt applies next
    is free. The result is the same function; only the fp64 summation order differs,
    ~1e-16 relative, far below fp32 noise. It is still a Conv2d with every attribute of the
    one it replaces (``_keeping_attributes``).
    """
    import torch
    from torch import nn

    class ShiftedDepthwise(nn.Conv2d):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return depthwise_shifted(x, self.taps, self.bias, self.padding)

    stand_in = _keeping_attributes(conv, ShiftedDepthwise)
    # (kh, kw, C): one contiguous row of per-channel weights per tap.
    taps = conv.weight.detach()[:, 0].permute(1, 2, 0).contiguous()
    stand_in.register_buffer("taps", taps, persistent=False)
    return stand_in


def _patch_matmul(conv: Any) -> Any:
    """A float64 stand-in for a Conv2d whose stride equals its kernel (patchify stems, ConvNeXt's
    downsampling, ViT patch embeddings): non-overlapping patches, so the convolution is exactly one
    dgemm of the (N*H'*W', kh*kw*C) patch matrix by the weights, with no im2col duplication. Reads
    channels-last memory without a copy and writes it, so the next ``permute(0, 2, 3, 1)`` is free.
    The same function; only the fp64 summation order differs. It is still a Conv2d with every
    attribute of the one it replaces (``_keeping_attributes``).
    """
    import torch
    from torch import nn

    class PatchMatmul(nn.Conv2d):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            n, c, h, w = x.shape
            kh, kw = self.kernel_size
            height, width = h // kh, w // kw
            patches = x.permute(0, 2, 3, 1)[:, :height * kh, :width * kw]
            patches = patches.reshape(n, height, kh, width, kw, c).transpose(2, 3).reshape(-1, kh * kw * c)
            weight = self.patch_weight
            out = patches @ weight if self.bias is None else torch.addmm(self.bias, patches, weight)
            return out.view(n, height, width, -1).permute(0, 3, 1, 2)

    stand_in = _keeping_attributes(conv, PatchMatmul)
    kh, kw = conv.kernel_size
    # (kh*kw*C, O), rows in the order the patches are flattened in forward.
    weight = conv.weight.detach().permute(2, 3, 1, 0).reshape(kh * kw * conv.in_channels, conv.out_channels)
    stand_in.register_buffer("patch_weight", weight.contiguous(), persistent=False)
    return stand_in


def _fast_fp64_stand_in(child: Any) -> Any | None:
    """The faster float64 module computing what ``child`` computes, if there is one."""
    from torch import nn

    if not (
        type(child) is nn.Conv2d and child.dilation == (1, 1)
        and child.padding_mode == "zeros" and isinstance(child.padding, tuple)
    ):  # fmt: skip
        return None
    depthwise = child.groups > 1 and child.groups == child.in_channels == child.out_channels
    if depthwise and child.stride == (1, 1):
        return _shifted_depthwise(child)
    if child.groups == 1 and child.stride == child.kernel_size and child.padding == (0, 0):
        return _patch_matmul(child)
    return None


def _with_fast_fp64_convolutions(model: Any) -> Any:
    for name, child in list(model.named_children()):
        stand_in = _fast_fp64_stand_in(child)
        if stand_in is not None:
            setattr(model, name, stand_in)
        else:
            _with_fast_fp64_convolutions(child)
    return model


class TorchRunner(Runner):
    """PyTorch eager in eval mode with no autograd: the reference. ``dtype="float64"`` runs a
    double-precision copy, the yardstick for fp32 rounding noise."""

    def __init__(
        self,
        model: nn.Module,
        input_names: Sequence[str],
        output_names: Sequence[str],
        *,
        dtype: str = "float32",
        device: str = "cpu",
    ) -> None:
        super().__init__(input_names, output_names)
        import torch

        self.dtype = dtype
        self._asks_for_float32: bool | None = None  # known after the first float64 pass
        self.device = torch.device(device)
        self.name = f"torch-{device}-{dtype}"
        if dtype == "float64":
            if fp64_lazy.weight_bytes(model) > fp64_lazy.LAZY_FP64_BYTES:  # no double copy of GBs of weights
                model = fp64_lazy.cast_as_it_runs(model, lambda m: _with_fast_fp64_convolutions(copy.deepcopy(m).double()))
            else:
                model = _with_fast_fp64_convolutions(copy.deepcopy(model).double())
        self.model = model.eval().to(self.device)

    def to_tensors(self, feeds: Mapping[str, np.ndarray]) -> list[Any]:
        import torch

        tensors = []
        for name in self.input_names:
            tensor = torch.from_numpy(feeds[name]).to(self.device)
            if self.dtype == "float64" and tensor.is_floating_point():
                tensor = tensor.double()
            tensors.append(tensor)
        return tensors

    def forward(self, tensors: Sequence[Any], record: list[Any] | None = None) -> Any:
        """The model call alone, for benchmarks that time it without conversions; ``record``
        collects the float inputs of its argmax/argmin/topk calls (fp64_mode.py)."""
        import torch

        from harness.runtime.fp64_mode import KeepFloat64  # defers torch

        # The float64 reference stays float64 where the model's code asks for float32 (fp64_mode.py).
        # A torch function mode costs ~15% of a float64 pass: after a first pass in which the model
        # asked for no float32, later passes run without it.
        widen = self.dtype == "float64" and self._asks_for_float32 is not False
        if not widen and record is None:
            with torch.inference_mode():
                return self.model(*tensors)
        mode = KeepFloat64(widen=widen, record=record)
        with torch.inference_mode(), mode:
            result = self.model(*tensors)
        if widen and self._asks_for_float32 is None:
            self._asks_for_float32 = mode.widened
        return result

    def infer_recording_discrete(self, feeds: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
        """``infer``, and the float inputs of the model's argmax/argmin/topk calls in call order."""
        record: list[Any] = []
        result = self.forward(self.to_tensors(feeds), record)
        problem = output_name_problem(result, self.output_names)
        if problem:
            raise GateError(f"{self.name}: {problem}")
        outputs = [t.detach().cpu().numpy() for t in output_list(result, self.output_names)]
        return dict(zip(self.output_names, outputs)), record

    def infer_impl(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        result = self.forward(self.to_tensors(feeds))
        problem = output_name_problem(result, self.output_names)
        if problem:
            raise GateError(f"{self.name}: {problem}")
        return [t.detach().cpu().numpy() for t in output_list(result, self.output_names)]


# ONNX Runtime's intra-op threads spin after each run, waiting for more work. With few cores the
# spin takes the cores of whatever runs next: PyTorch in a parity case ran twice as slow right
# after ONNX Runtime on 2 cores. Sessions that alternate with PyTorch run without it.
NO_SPINNING = {"session.intra_op.allow_spinning": "0"}

# onnxruntime.GraphOptimizationLevel's values, by name (MLflow's ONNX flavor takes the number).
GRAPH_OPTIMIZATION_LEVELS = {"ORT_DISABLE_ALL": 0, "ORT_ENABLE_BASIC": 1, "ORT_ENABLE_EXTENDED": 2, "ORT_ENABLE_ALL": 99}
DEFAULT_GRAPH_OPTIMIZATION = "ORT_ENABLE_ALL"


class OrtRunner(Runner):
    """ONNX Runtime with explicit threads and optimisation level, so runs are comparable."""

    def __init__(
        self,
        path: Path,
        input_names: Sequence[str],
        output_names: Sequence[str],
        *,
        providers: Sequence[Any] = ("CPUExecutionProvider",),
        threads: int | None = None,
        graph_optimization: str = DEFAULT_GRAPH_OPTIMIZATION,
        config_entries: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(input_names, output_names)
        import onnxruntime as ort

        self.threads = threads or default_threads()
        self.graph_optimization = graph_optimization
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, graph_optimization)
        options.log_severity_level = ORT_LOG_SEVERITY
        for key, value in (config_entries or {}).items():
            options.add_session_config_entry(key, value)
        try:
            self.session: onnxruntime.InferenceSession = ort.InferenceSession(
                str(path), options, providers=list(providers)
            )
        except Exception as exc:
            first = first_line(exc, type(exc).__name__)
            raise ArtifactError(f"ONNX Runtime cannot load {str(path)!r}: {first}") from None
        self.providers = self.session.get_providers()
        self.name = f"onnxruntime-{self.providers[0].removesuffix('ExecutionProvider').lower()}"
        self.graph_inputs = tuple(i.name for i in self.session.get_inputs())
        self.graph_outputs = tuple(o.name for o in self.session.get_outputs())

    def infer_impl(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        missing = [n for n in self.graph_inputs if n not in feeds]
        if missing:
            raise GateError(
                f"{self.name}: the ONNX graph expects inputs {list(self.graph_inputs)}, "
                f"the config declares {list(self.input_names)}"
            )
        unknown = [n for n in self.output_names if n not in self.graph_outputs]
        if unknown:
            raise GateError(
                f"{self.name}: the ONNX graph has outputs {list(self.graph_outputs)}, "
                f"the config declares {list(self.output_names)}"
            )
        try:
            # By name, as consumers fetch them: a graph with swapped names must not pass by position.
            return self.session.run(list(self.output_names), {n: feeds[n] for n in self.graph_inputs})
        except Exception as exc:
            first = first_line(exc, type(exc).__name__)
            shapes = {n: tuple(feeds[n].shape) for n in self.graph_inputs}
            raise GateError(f"{self.name} failed on inputs {shapes}: {first}") from None
