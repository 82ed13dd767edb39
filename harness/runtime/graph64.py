"""The exported graph itself, evaluated in float64 by a reference evaluator (``onnx.reference``).

ONNX Runtime answers "what do fp32 kernels make of this graph"; this module answers "what does
the graph compute", with ONNX Runtime's kernels out of the way. Every float32 in the graph becomes
a float64: initializers, constants, ``Cast(to=FLOAT)``, the declared types. A float16 or bfloat16
stays what it is: that is a precision the model chose, and PyTorch's float64 run keeps it too.

``onnx.reference`` was chosen because it ships with onnx (no new dependency) and implements every
standard operator in numpy, float64 included. It is slower than ONNX Runtime (the default model:
~0.2 s a call at batch 1) and has no kernels for contrib domains (``com.microsoft`` ops of an
ONNX Runtime-optimised graph): ``unsupported_ops`` names those, and the fidelity check then says
it could not judge.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from harness.core.errors import first_line
from harness.runtime.runners import depthwise_shifted

if TYPE_CHECKING:
    from onnx.reference import ReferenceEvaluator

FLOAT, DOUBLE = onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE
# The attribute under which harness/runtime/export.py's wrapper holds a model that names its outputs: its
# parameters appear in the graph under this prefix.
WRAPPER_SCOPE = "inner"
STANDARD_DOMAINS = ("", "ai.onnx")
HALF = (onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)
FP32_HALF_ULP = 2.0**-24  # relative, at most
# Standard ops this module brings its own float64 kernel for (``_float64_kernels``).
OWN_KERNELS = {"Erf", "Conv", "ConvTranspose", "MatMul", "Gelu", "GatherElements"}
# Attributes that name an element type; a FLOAT there becomes DOUBLE.
DTYPE_ATTRIBUTES = ("to", "dtype", "output_dtype")


# Float32 constants with at most this many values are read back as the double they most likely
# rounded from (``likely_double``); larger ones are weights, float32 in PyTorch as well.
SCALAR_CONSTANT_SIZE = 16
WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")  # ops whose inputs after the first are weights


def _structured_constants() -> dict[np.float32, float]:
    """Doubles that models write as Python floats and exporters store rounded to float32:
    square roots and their inverses (GELU's 1/sqrt(2), attention's 1/sqrt(d)), quarter powers
    (a scale split between queries and keys), and a few transcendental constants."""
    named = [math.pi, math.e, math.log(2), math.log(10), math.sqrt(2 / math.pi), 2 / math.sqrt(math.pi)]
    candidates = [c for x in named for c in (x, 1 / x, x / 2, 2 * x)]
    candidates += [p / q for q in range(3, 17) for p in range(1, 4 * q) if math.gcd(p, q) == 1]  # 1/6, 2/3
    for k in range(2, 4097):
        candidates += [math.sqrt(k), 1 / math.sqrt(k), k**0.25, k**-0.25]
    table: dict[np.float32, float] = {}
    for candidate in candidates:
        table.setdefault(np.float32(candidate), candidate)
    return table


@functools.cache
def _structured() -> dict[np.float32, float]:
    return _structured_constants()


def likely_double(value: np.float32) -> float:
    """The double a float32 constant was most likely rounded from.

    PyTorch computes with the model's Python floats in double (``x / math.sqrt(2)`` in GELU, an
    epsilon, ``1 / math.sqrt(head_dim)``); the graph stores them as float32, about 3e-8 off. Read
    back as they are, a faithful GELU graph differs from PyTorch's float64 by ~1e-8. A structured
    constant whose float32 rounding matches is taken first, then the shortest decimal that rounds
    to the same float32 (0.5, 1e-5, 0.044715): the number as a person wrote it."""
    structured = _structured().get(np.float32(value))
    if structured is not None:
        return structured
    return float(np.format_float_positional(np.float32(value), unique=True, trim="-"))


def _tensor_to_double(tensor: onnx.TensorProto, recover: bool = True, kept: frozenset[bytes] = frozenset()) -> onnx.TensorProto:
    """``tensor`` in float64; a small one read back as the doubles it rounded from when ``recover``
    (constants the exporter wrote, not the model's own float32 parameters). ``kept``: the bytes of
    the model's small float32 parameters and buffers, widened as they are wherever the exporter
    put them (TorchScript folds Llama's ``inv_freq`` buffer into an unnamed Constant node)."""
    if tensor.data_type != FLOAT:
        return tensor
    values = numpy_helper.to_array(tensor)
    if recover and values.size <= SCALAR_CONSTANT_SIZE and np.ascontiguousarray(values, np.float32).tobytes() not in kept:
        double = np.array([likely_double(v) for v in values.ravel()], np.float64).reshape(values.shape)
    else:
        double = values.astype(np.float64)
    return numpy_helper.from_array(double, tensor.name)


def _type_to_double(value_type: onnx.TypeProto) -> None:
    kind = value_type.WhichOneof("value")
    if kind == "tensor_type" and value_type.tensor_type.elem_type == FLOAT:
        value_type.tensor_type.elem_type = DOUBLE
    elif kind == "sequence_type":
        _type_to_double(value_type.sequence_type.elem_type)
    elif kind == "optional_type":
        _type_to_double(value_type.optional_type.elem_type)


def _node_to_double(node: onnx.NodeProto, kept: frozenset[bytes] = frozenset()) -> None:
    for attribute in node.attribute:
        if attribute.name in DTYPE_ATTRIBUTES and attribute.type == onnx.AttributeProto.INT and attribute.i == FLOAT:
            attribute.i = DOUBLE
        elif attribute.type == onnx.AttributeProto.TENSOR:
            attribute.t.CopyFrom(_tensor_to_double(attribute.t, kept=kept))
        elif attribute.type == onnx.AttributeProto.GRAPH:
            _graph_to_double(attribute.g, kept=kept)
        elif attribute.type == onnx.AttributeProto.GRAPHS:
            for graph in attribute.graphs:
                _graph_to_double(graph, kept=kept)
    if node.op_type == "Constant" and node.domain in STANDARD_DOMAINS:
        # value_float(s) would come out as float32 and narrow what they touch.
        for attribute in list(node.attribute):
            if attribute.name in ("value_float", "value_floats"):
                values = np.array(attribute.f if attribute.name == "value_float" else list(attribute.floats), np.float32)
                node.attribute.remove(attribute)
                node.attribute.append(onnx.helper.make_attribute("value", _tensor_to_double(numpy_helper.from_array(values))))


def _constant_of_shape_default(node: onnx.NodeProto) -> None:
    # Without a value attribute ConstantOfShape makes float32 zeros (the spec's default).
    if node.op_type == "ConstantOfShape" and node.domain in STANDARD_DOMAINS and not node.attribute:
        node.attribute.append(onnx.helper.make_attribute("value", numpy_helper.from_array(np.zeros(1))))


def _graph_to_double(
    graph: onnx.GraphProto, parameters: set[str] = frozenset(), kept: frozenset[bytes] = frozenset()  # type: ignore[assignment]
) -> None:
    for index, initializer in enumerate(graph.initializer):
        graph.initializer[index].CopyFrom(_tensor_to_double(initializer, initializer.name not in parameters, kept))
    for value in (*graph.input, *graph.output, *graph.value_info):
        _type_to_double(value.type)
    for node in graph.node:
        _node_to_double(node, kept)
        _constant_of_shape_default(node)


def to_float64(
    model: onnx.ModelProto, parameters: set[str] = frozenset(), kept: frozenset[bytes] = frozenset()  # type: ignore[assignment]
) -> onnx.ModelProto:
    """A copy of ``model`` computing in float64 wherever it computed in float32. ``parameters``
    names the initializers that are the model's own float32 parameters, and ``kept`` holds the
    bytes of its small ones: those are widened as they are; other small float constants are read
    back as the double they most likely rounded from."""
    double = onnx.ModelProto()
    double.CopyFrom(model)
    _graph_to_double(double.graph, parameters, kept)
    for function in double.functions:
        for node in function.node:
            _node_to_double(node, kept)
            _constant_of_shape_default(node)
    return double


def _nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    found = []
    for node in graph.node:
        found.append(node)
        for attribute in node.attribute:
            for subgraph in [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else attribute.graphs:
                found += _nodes(subgraph)
    return found


def unsupported_ops(model: onnx.ModelProto) -> list[str]:
    """Op types the reference evaluator has no implementation for (contrib and custom domains),
    sorted and without repeats; empty when the whole graph can be evaluated."""
    from onnx.reference.ops import load_op

    functions = {(f.domain, f.name) for f in model.functions}
    versions = {opset.domain: opset.version for opset in model.opset_import}
    missing = set()
    for node in _nodes(model.graph) + [n for f in model.functions for n in f.node]:
        if (node.domain, node.op_type) in functions or (node.domain in STANDARD_DOMAINS and node.op_type in OWN_KERNELS):
            continue
        if node.domain not in STANDARD_DOMAINS:
            missing.add(node.op_type)
            continue
        try:
            load_op("", node.op_type, versions.get(node.domain, versions.get("", 21)))
        except Exception:
            missing.add(node.op_type)
    return sorted(missing)



def _as_torch(array: np.ndarray) -> Any:
    """A torch view of ``array`` for the float64 kernels, without copying the evaluator's
    read-only constants (weights) on every call: the kernels never write to their inputs."""
    import warnings

    import torch

    array = array if array.flags.c_contiguous else np.ascontiguousarray(array)
    if array.flags.writeable:
        return torch.from_numpy(array)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch's "non-writable array" notice
        return torch.from_numpy(array)


def _float64_kernels() -> list[type]:
    """Kernels that replace ``onnx.reference``'s where it narrows to float32 or is slow. Its Erf
    maps ``math.erf`` element by element into float32 (``np.vectorize(..., otypes="f")``), which
    made a faithful GELU graph look 1e-8 off; its Conv is an im2col in numpy, 40% of the default
    model's evaluation (MatMul: see below); its ConvTranspose is a col2im in Python loops, 19 s of a
    small U-Net's 20 s fidelity check; opset 20's Gelu it lacks; its GatherElements takes at
    most 64 choices. They run here on PyTorch's float64 kernels: the same functions, exact to
    float64 rounding, and independent of how the model's own code calls them."""
    import torch
    import torch.nn.functional as F
    from onnx.reference.op_run import OpRun
    from onnx.reference.ops.op_conv import Conv as ReferenceConv
    from onnx.reference.ops.op_conv_transpose import ConvTranspose as ReferenceConvTranspose

    class Erf(OpRun):
        op_domain = ""

        def _run(self, x: np.ndarray) -> tuple[np.ndarray]:
            if x.dtype != np.float64:
                return (np.vectorize(math.erf, otypes=[x.dtype])(x),)
            return (torch.special.erf(_as_torch(x)).numpy(),)

    convolutions = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}

    class Conv(ReferenceConv):
        op_domain = ""

        def _run(self, X, W, B=None, auto_pad=None, dilations=None, group=None, kernel_shape=None, pads=None,  # type: ignore[no-untyped-def]
                 strides=None):  # fmt: skip
            spatial = X.ndim - 2
            if X.dtype != np.float64 or spatial not in convolutions or auto_pad not in (None, "NOTSET", "VALID"):
                return super()._run(X, W, B, auto_pad, dilations, group, kernel_shape, pads, strides)
            pads = [0] * (2 * spatial) if pads is None or auto_pad == "VALID" else list(pads)
            x, w = _as_torch(X), _as_torch(W)
            b = None if B is None else _as_torch(B)
            depthwise = spatial == 2 and group == X.shape[1] == W.shape[0] and W.shape[1] == 1
            if depthwise and pads[:2] == pads[2:] and set(strides or [1]) == {1} and set(dilations or [1]) == {1}:
                # PyTorch loops over the groups of a float64 grouped convolution: slow (runners.py).
                taps = w[:, 0].permute(1, 2, 0).contiguous()
                return (depthwise_shifted(x, taps, b, pads[:2]).contiguous().numpy(),)
            # ONNX pads are (begin..., end...); F.pad takes (last_begin, last_end, ...).
            widths = [w for axis in reversed(range(spatial)) for w in (pads[axis], pads[axis + spatial])]
            if any(widths):
                x = F.pad(x, widths)
            out = convolutions[spatial](
                x, w, b,
                stride=tuple(strides or [1] * spatial), dilation=tuple(dilations or [1] * spatial), groups=group or 1,
            )  # fmt: skip
            return (out.numpy(),)

    transposed_convolutions = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}

    class ConvTranspose(ReferenceConvTranspose):
        op_domain = ""

        def _run(self, X, W, B=None, auto_pad=None, dilations=None, group=None, kernel_shape=None,  # type: ignore[no-untyped-def]
                 output_padding=None, output_shape=None, pads=None, strides=None):  # fmt: skip
            spatial = X.ndim - 2
            if (X.dtype != np.float64 or spatial not in transposed_convolutions or output_shape is not None
                    or auto_pad not in (None, "NOTSET", "VALID")):  # fmt: skip
                return super()._run(X, W, B, auto_pad, dilations, group, kernel_shape, output_padding, output_shape,
                                    pads, strides)  # fmt: skip
            pads = [0] * (2 * spatial) if pads is None or auto_pad == "VALID" else list(pads)
            extra = list(output_padding or [0] * spatial)[:spatial]
            # Unpadded, then cropped per side: ONNX pads may differ at the two ends, PyTorch's may not.
            full = transposed_convolutions[spatial](
                _as_torch(X), _as_torch(W), None,
                stride=tuple(strides or [1] * spatial), dilation=tuple(dilations or [1] * spatial), groups=group or 1,
            )  # fmt: skip
            if any(extra):  # output_padding: cells past the last input's reach, which hold the bias alone
                full = F.pad(full, [width for axis in reversed(range(spatial)) for width in (0, extra[axis])])
            crop = tuple(slice(pads[axis], full.shape[axis + 2] - pads[axis + spatial]) for axis in range(spatial))
            out = full[(slice(None), slice(None), *crop)]
            if B is not None:
                out = out + _as_torch(B).reshape(1, -1, *[1] * spatial)
            return (out.contiguous().numpy(),)

    class MatMul(OpRun):
        op_domain = ""

        def _run(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray]:
            # numpy's BLAS threads beside PyTorch's made MatMul 7x slower than the same dgemm in PyTorch.
            if a.dtype != np.float64 or b.dtype != np.float64:
                return (np.matmul(a, b),)
            return (torch.matmul(_as_torch(a), _as_torch(b)).numpy(),)

    class Gelu(OpRun):
        op_domain = ""

        def _run(self, x: np.ndarray, approximate: str = "none") -> tuple[np.ndarray]:
            tensor = _as_torch(x)
            return (F.gelu(tensor, approximate=approximate or "none").numpy(),)

    class GatherElements(OpRun):
        op_domain = ""

        # The reference's np.choose takes at most 64 choices: BERT's position ids have more.
        def _run(self, data: np.ndarray, indices: np.ndarray, axis: int = 0) -> tuple[np.ndarray]:
            axis = axis if axis >= 0 else axis + data.ndim
            indices = np.where(indices < 0, indices + data.shape[axis], indices)
            return (np.take_along_axis(data, indices, axis=axis),)

    return [Erf, Conv, ConvTranspose, MatMul, Gelu, GatherElements]


def _float_constants(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    """Every float tensor stored in the graph: initializers and Constant nodes' values."""
    tensors = list(model.graph.initializer)
    for node in _nodes(model.graph):
        tensors += [a.t for a in node.attribute if a.type == onnx.AttributeProto.TENSOR]
    return [t for t in tensors if t.data_type in (FLOAT, DOUBLE)]


def model_constants(model: Any) -> dict[str, np.ndarray]:
    """The PyTorch model's float parameters and buffers by name, as Graph64 takes them."""
    return {n: t.detach().cpu().numpy() for n, t in (*model.named_parameters(), *model.named_buffers())
            if t.is_floating_point()}  # fmt: skip


def _layout_free_key(values: np.ndarray) -> tuple[int, int, int]:
    """The same for any order of the same float32 values: two sums over their bits, each multiplied
    by an odd constant, wrapping at 2**64. Sorting did the same at 10x the cost."""
    bits = np.ascontiguousarray(values, np.float32).ravel().view(np.uint32).astype(np.uint64)
    with np.errstate(over="ignore"):
        first = int((bits * np.uint64(0x9E3779B97F4A7C15)).sum(dtype=np.uint64))
        second = int(((bits ^ (bits >> np.uint64(13))) * np.uint64(0xC2B2AE3D27D4EB4F)).sum(dtype=np.uint64))
    return values.size, first, second


def derived_constants(model: onnx.ModelProto, parameters: Mapping[str, np.ndarray]) -> tuple[set[str], set[str]]:
    """Names of the graph's float constants that are not one of ``parameters`` (the PyTorch
    model's float32 parameters and buffers, by name): values the exporter computed (a BatchNorm
    folded into a convolution, a fused scale, a weight norm) and rounded to float32, and scalars.
    The rest the graph holds exactly as PyTorch does: a parameter under its own name, or the same
    values in another layout (a transposed weight). A same-layout copy under another name was
    computed: weight norm at its initialisation computes g*v/|v| == v exactly in float32, which
    float64 does not (g is |v| rounded).

    Returns the derived constants and, apart, the written ones: small constants that are no
    parameter at all (an epsilon, 1/sqrt(2)), read back as the doubles they were written as."""
    by_name = {name.removeprefix(f"{WRAPPER_SCOPE}."): values for name, values in parameters.items()}
    names = set(by_name)
    by_bytes: dict[bytes, set[str]] = {}
    by_extent: dict[tuple[int, float, float], list[np.ndarray]] = {}
    for name, values in parameters.items():
        flat = np.ascontiguousarray(values, np.float32).ravel()
        by_bytes.setdefault(flat.tobytes(), set()).add(name)
        if flat.size:
            by_extent.setdefault((flat.size, float(flat.min()), float(flat.max())), []).append(flat)
    derived: set[str] = set()
    written: set[str] = set()
    layout_keys: dict[int, tuple[int, int, int]] = {}  # a parameter's layout-free key, computed once
    # A small constant in a weight or bias slot is a weight (the bias of a BatchNorm folded into a
    # 16-channel convolution), never a scalar the exporter wrote.
    weight_slots = {
        name for node in _nodes(model.graph) if node.op_type in WEIGHT_OPS for name in list(node.input)[1:]
    }  # fmt: skip
    for tensor in _float_constants(model):
        array = numpy_helper.to_array(tensor).astype(np.float32)
        values = array.ravel()
        own_name = tensor.name.removeprefix(f"{WRAPPER_SCOPE}.")
        own = by_name.get(own_name)
        if own is not None and own.shape == array.shape and own.ndim >= 2 and values.tobytes() != own.tobytes():
            # Under a parameter's name but not its values: a fold rescales slices of it (dynamo
            # folds a BatchNorm into the Gemm and keeps the weight's name); anything else is the
            # parameter altered, a defect to judge and no storage to allow for.
            if _rescaled(array, own):
                derived.add(tensor.name)
            continue
        holders = by_bytes.get(values.tobytes())
        if holders is not None:
            if own_name in names or not tensor.name.strip():
                continue
            if values.size > SCALAR_CONSTANT_SIZE or tensor.name in weight_slots:
                derived.add(tensor.name)
                continue
            written.add(tensor.name)
            continue
        # A transposed or reshaped copy holds the same values in another order (small weights too:
        # a 2x8 Linear's transposed weight is no scalar).
        same_extent = by_extent.get((values.size, float(values.min()), float(values.max())), []) if values.size else []
        # Only for a tensor with a parameter of the same size and extent.
        if same_extent:
            key = _layout_free_key(values)
            if any(layout_keys.setdefault(id(c), _layout_free_key(c)) == key for c in same_extent):
                continue
        # A transposed copy (TorchScript's MatMul weights, under new names), altered: a defect.
        closest = _closest_transposed(array, [v for v in parameters.values() if v.size == values.size and v.size > 1])
        if closest is not None and not _rescaled(array, closest):
            continue
        if closest is None and values.size <= SCALAR_CONSTANT_SIZE and tensor.name not in weight_slots:
            written.add(tensor.name)
            continue
        derived.add(tensor.name)
    return derived, written


def _closest_transposed(array: np.ndarray, candidates: list[np.ndarray]) -> np.ndarray | None:
    """The candidate that ``array`` is, as it is or transposed, within 1% on average; or None."""
    best, distance = None, 1e-2
    for candidate in candidates:
        for layout in (candidate, candidate.T if candidate.ndim == 2 else candidate):
            if layout.shape != array.shape:
                continue
            scale = float(np.abs(layout).mean()) or 1.0
            d = float(np.abs(array.astype(np.float64) - layout).mean()) / scale
            if d < distance:
                best, distance = np.asarray(layout, np.float32), d
    return best


def _rescaled(values: np.ndarray, original: np.ndarray) -> bool:
    """Whether ``values`` is ``original`` with every slice along one axis scaled by one factor
    each (to a few float32 ulps): what folding a per-channel scale into a weight makes."""
    nonzero = original != 0
    if not nonzero.any() or (values[~nonzero] != 0).any():
        return False
    ratio = np.where(nonzero, values.astype(np.float64) / np.where(nonzero, original, 1), np.nan)
    for axis in range(ratio.ndim):
        slices = np.moveaxis(ratio, axis, 0).reshape(ratio.shape[axis], -1)
        spread = np.nanmax(slices, axis=1) - np.nanmin(slices, axis=1)
        if np.all(np.nan_to_num(spread) <= 8 * 2.0**-23 * np.nanmax(np.abs(slices), axis=1)):
            return True
    return False


def _half_casts(model: onnx.ModelProto) -> list[onnx.AttributeProto]:
    nodes = _nodes(model.graph) + [n for f in model.functions for n in f.node]
    return [
        a for node in nodes for a in node.attribute
        if a.name in DTYPE_ATTRIBUTES and a.type == onnx.AttributeProto.INT and a.i in HALF
    ]  # fmt: skip


def _stored_rounded(tensor: onnx.TensorProto, derived: set[str]) -> bool:
    """Whether float32 storage may have moved ``tensor``: a derived constant, or an unnamed one
    (a Constant node's) unless it is a scalar. Written scalars are read back as the doubles they
    were written as (``likely_double``), so storage moved them by nothing."""
    if tensor.data_type != DOUBLE:
        return False
    if tensor.name:
        return tensor.name in derived
    return numpy_helper.to_array(tensor).size > SCALAR_CONSTANT_SIZE


def smooth(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of the float64 ``model`` whose casts to float16 and bfloat16 compute in float64.

    The effect of storage is measured on this smooth function: through a cast to float16, a move
    of half a float32 ulp can flip a float16 rounding, a jump of a whole float16 ulp that would make
    the bound as coarse as the float16 leak it must catch."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for attribute in _half_casts(copy):
        attribute.i = DOUBLE
    return copy


def perturbed(model: onnx.ModelProto, names: set[str], seed: int = 0) -> onnx.ModelProto:
    """A copy of the float64 ``model`` with each named constant moved by a random amount within
    half a float32 ulp: what storing those constants in float32 may have done to them, on the
    ``smooth`` function."""
    rng = np.random.default_rng(seed)
    copy = smooth(model)
    for tensor in _float_constants(copy):
        if _stored_rounded(tensor, names):
            values = numpy_helper.to_array(tensor)
            # Half an ulp each, plus one ulp the whole tensor shares: a folded constant is computed
            # (a norm, a scale per channel) before it is rounded, and those errors move together.
            shared = rng.uniform(-1.0, 1.0) * 2 * FP32_HALF_ULP
            moved = values * (1 + shared + rng.uniform(-1.0, 1.0, values.shape) * FP32_HALF_ULP)
            tensor.CopyFrom(numpy_helper.from_array(moved.astype(values.dtype), tensor.name))
    return copy


# Initializers larger than this lose their data in ``graph_without_weights`` (readers need their names).
WEIGHTLESS_ABOVE_BYTES = 4096


def graph_without_weights(path: Path | str) -> onnx.ModelProto:
    """The graph as its readers need it (nodes, names, metadata, which values are initializers),
    without the weights' data: module alignment, the op lists, the discrete ops."""
    proto = onnx.load(str(path))
    for init in proto.graph.initializer:
        if init.ByteSize() > WEIGHTLESS_ABOVE_BYTES:
            for data in ("raw_data", "float_data", "double_data", "int32_data", "int64_data"):
                init.ClearField(data)
    return proto


# Ops that move or select values without computing new ones: a finding names the op before them.
MOVING_OPS = {"Identity", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Flatten", "Slice", "Gather", "Expand"}


def producing_operators(model: onnx.ModelProto, outputs: Sequence[str]) -> dict[str, str]:
    """The op type that computes each of ``outputs``, looking back through ``MOVING_OPS``."""
    producers = {name: node for node in model.graph.node for name in node.output}

    def computing(value: str, depth: int = 0) -> list[str]:
        node = producers.get(value)
        while node is not None and node.op_type in MOVING_OPS and node.input:
            node = producers.get(node.input[0])
        if node is None:
            return []
        if node.op_type == "Concat" and depth < 4:  # each part was computed by its own op
            return [op for part in node.input for op in computing(part, depth + 1)]
        return [node.op_type]

    return {output: "/".join(dict.fromkeys(ops)) for output in outputs if (ops := computing(output))}


# The model's own float32 parameters above this size skip the protobuf round trips (``_lift_parameters``).
LIFT_ABOVE_BYTES = 1 << 16


def _lift_parameters(model: onnx.ModelProto, staying: set[str]) -> dict[str, np.ndarray]:
    """Take the model's own large float32 parameters out of ``model``, widened to float64 in numpy.
    Through the proto they went to numpy, back into a float64 proto, and to numpy again in each
    evaluator: half of the 1.3 s that building the default model's float64 graph took. The
    derived and written constants (``staying``) stay in the proto: they are read back as doubles
    or perturbed there."""
    inputs = {value.name for value in model.graph.input}
    lifted: dict[str, np.ndarray] = {}
    kept = []
    for tensor in model.graph.initializer:
        if (tensor.data_type == FLOAT and tensor.name not in staying and tensor.name not in inputs
                and tensor.ByteSize() > LIFT_ABOVE_BYTES):  # fmt: skip
            lifted[tensor.name] = numpy_helper.to_array(tensor).astype(np.float64)
        else:
            copy = onnx.TensorProto()
            copy.CopyFrom(tensor)  # a detached copy: the field is cleared below
            kept.append(copy)
    if lifted:
        del model.graph.initializer[:]
        model.graph.initializer.extend(kept)
    return lifted


def _evaluator(model: onnx.ModelProto, lifted: Mapping[str, np.ndarray] | None = None) -> ReferenceEvaluator:
    """The reference evaluator over ``model`` with the float64 kernels, and every float attribute
    (an epsilon, an alpha) read back as the double it rounded from: a proto stores attributes as
    float32, and GroupNorm's 1e-5 stored so moves its output by 1e-8 on silent audio. ``lifted``:
    initializers taken out of ``model`` (``_lift_parameters``), handed to the evaluator as they are."""
    from onnx.reference import ReferenceEvaluator

    evaluator = ReferenceEvaluator(model, new_ops=_float64_kernels())
    evaluator.rt_inits_.update(lifted or {})
    for node in evaluator.rt_nodes_:
        for name in getattr(node, "attributes_names_", ()):
            value = getattr(node, name, None)
            if isinstance(value, (float, np.floating)) and not isinstance(value, np.float64):
                setattr(node, name, likely_double(np.float32(value)))
    return evaluator


class Graph64:
    """An ONNX file's graph in float64, runnable on numpy feeds.

    ``exact_parameters`` are the PyTorch model's float32 parameters and buffers: the graph's
    other float constants were computed at export and stored in float32 (``derived_constants``),
    and ``infer`` also runs a copy with those moved within half an ulp, so the caller knows how far
    float32 storage alone can move each value (``Evaluation.storage``)."""

    def __init__(self, path: Path | str, output_names: Sequence[str], exact_parameters: Mapping[str, np.ndarray]) -> None:
        from onnx.reference import ReferenceEvaluator

        model = onnx.load(str(path))
        self.output_names = tuple(output_names)
        self.graph_inputs = tuple(i.name for i in model.graph.input)
        self.unsupported = unsupported_ops(model)
        self.problem: str | None = None
        self.derived: set[str] = set()
        self._evaluator: ReferenceEvaluator | None = None
        self._perturbed: ReferenceEvaluator | None = None
        self._smooth: ReferenceEvaluator | None = None
        if self.unsupported:
            self.problem = f"ops: {', '.join(self.unsupported)}"
            return
        self.derived, written = derived_constants(model, exact_parameters)
        kept = frozenset(
            np.ascontiguousarray(values, np.float32).tobytes()
            for values in exact_parameters.values() if values.size <= SCALAR_CONSTANT_SIZE
        )  # fmt: skip
        lifted = _lift_parameters(model, written | self.derived)
        double = to_float64(model, {t.name for t in model.graph.initializer if t.name not in written}, kept)
        del model
        try:
            self._evaluator = _evaluator(double, lifted)
            if any(_stored_rounded(t, self.derived) for t in _float_constants(double)):
                self._perturbed = _evaluator(perturbed(double, self.derived), lifted)
                # The unperturbed smooth function, where it is not the graph itself.
                if _half_casts(double):
                    self._smooth = _evaluator(smooth(double), lifted)
        except Exception as exc:  # an attribute or type the evaluator refuses
            self.problem = f"the reference evaluator cannot load the graph: {first_line(exc, type(exc).__name__)}"

    @property
    def available(self) -> bool:
        return self._evaluator is not None

    def infer(self, feeds: Mapping[str, np.ndarray], values: Sequence[str] = ()) -> Evaluation:
        """The graph's outputs and ``values`` on ``feeds``, float inputs widened to float64."""
        assert self._evaluator is not None, self.problem
        widened = {
            name: feeds[name].astype(np.float64) if feeds[name].dtype == np.float32 else feeds[name]
            for name in self.graph_inputs
        }
        wanted = list(dict.fromkeys([*self.output_names, *values]))
        exact = dict(zip(wanted, (np.asarray(v) for v in self._evaluator.run(wanted, widened))))
        storage: dict[str, np.ndarray] = {}
        if self._perturbed is not None:
            moved = dict(zip(wanted, (np.asarray(v) for v in self._perturbed.run(wanted, widened))))
            base = exact if self._smooth is None else dict(zip(wanted, map(np.asarray, self._smooth.run(wanted, widened))))
            # A NaN/Inf the move alone makes (a mask constant at float32's limit) measures nothing.
            storage = {
                name: np.nan_to_num(np.abs(moved[name] - base[name]), nan=0.0, posinf=0.0)
                for name in wanted
                if base[name].dtype.kind == "f" and moved[name].shape == base[name].shape
            }
        return Evaluation(exact, storage)


@dataclass(frozen=True)
class Evaluation:
    """What the float64 graph computed, and how far float32 storage of its derived constants can
    move each float value (zeros where it holds none)."""

    values: Mapping[str, np.ndarray]
    storage: Mapping[str, np.ndarray]

    def storage_effect(self, name: str) -> float:
        effect = self.storage.get(name)
        return float(effect.max(initial=0.0)) if effect is not None else 0.0
