"""Map named PyTorch modules to ONNX values, through the scope each exporter leaves on its nodes.

* dynamo: node metadata ``pkg.torch.onnx.name_scopes``, e.g. ``['', 'backbone', 'backbone.stem',
  'backbone.stem.0', 'conv2d']`` (module paths, then the FX node).
* TorchScript: node names ``/backbone/stem/stem.0/Conv``; a segment is a module's path relative to
  an ancestor (``stages.0`` under ``backbone``), so segments are resolved against the module list.

A model that names its outputs (every transformers model) is exported through a wrapper that holds
it as ``inner`` (harness/runtime/export.py), so every scope starts with ``inner``: ``inner.encoder`` in
dynamo metadata, ``/inner/encoder/...`` in node names. The scopes are read both as they are and
with that prefix dropped, and the reading that places more nodes in the model's own modules wins.

A module's output is the last value produced within its scope that is consumed outside it or is
a graph output. Its inputs are the values its nodes consume from outside, minus constants.
"""

from __future__ import annotations

import ast
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

if TYPE_CHECKING:
    import onnx

    from harness.align.capture import Capture

NAME_SCOPES = "pkg.torch.onnx.name_scopes"
# The attribute under which harness/runtime/export.py's OutputsByName wrapper holds the exported model.
WRAPPER_SCOPE = "inner"


@dataclass(frozen=True)
class ModuleValues:
    """Where one module sits in the ONNX graph."""

    module: str
    output: str
    inputs: tuple[str, ...]
    ops: str  # op types in its scope, e.g. "Conv, Transpose x2"


@dataclass
class Alignment:
    scheme: str  # "dynamo metadata", "TorchScript node names" or "none"
    aligned: dict[str, ModuleValues] = field(default_factory=dict)
    unaligned: dict[str, str] = field(default_factory=dict)  # module -> why not
    graph_inputs: tuple[str, ...] = ()
    unscoped_nodes: int = 0

    def values(self) -> list[str]:
        """Every ONNX value the probe run must return, once."""
        names = [v for m in self.aligned.values() for v in (m.output, *m.inputs)]
        return list(dict.fromkeys(n for n in names if n not in self.graph_inputs))


def _dynamo_scope(node: onnx.NodeProto, wrapper: str) -> list[str] | None:
    for prop in node.metadata_props:
        if prop.key == NAME_SCOPES:
            try:
                scopes = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                return None
            # Drop the root '' and the trailing FX node name (and the wrapper's own scope).
            chain = [s for s in scopes[:-1] if s]
            if wrapper:
                chain = [s.removeprefix(f"{wrapper}.") for s in chain if s != wrapper]
            return chain
    return None


def _torchscript_scope(node: onnx.NodeProto, modules: Sequence[str], wrapper: str) -> list[str] | None:
    if not node.name.startswith("/"):
        return None
    segments = node.name.split("/")[1:-1]
    if wrapper:
        if not segments or segments[0] != wrapper:
            return []
        segments = segments[1:]
    chain: list[str] = []
    current = ""
    for segment in segments:
        prefix = f"{current}." if current else ""
        candidates = [
            m for m in modules
            if m.startswith(prefix) and (m in (prefix + segment, segment) or m.endswith("." + segment))
        ]  # fmt: skip
        if not candidates:
            return chain  # a scope the module list does not know (e.g. a functional helper)
        current = min(candidates, key=len)
        chain.append(current)
    return chain


def _placed(scopes: list[list[str] | None], known: set[str]) -> int:
    """Nodes whose scope chain names at least one of the model's modules."""
    return sum(1 for chain in scopes if chain and any(s in known for s in chain))


def node_scopes(model: onnx.ModelProto, modules: Sequence[str]) -> tuple[str, list[list[str] | None]]:
    """The scheme that applies and, per node, the chain of module paths it was exported from."""
    known = set(modules)
    nodes = model.graph.node
    readers: tuple[tuple[str, Callable[[onnx.NodeProto, str], list[str] | None]], ...] = (
        ("dynamo metadata", _dynamo_scope),
        ("TorchScript node names", lambda node, wrapper: _torchscript_scope(node, modules, wrapper)),
    )
    for scheme, read in readers:
        plain = [read(node, "") for node in nodes]
        wrapped = [read(node, WRAPPER_SCOPE) for node in nodes]
        if scheme.startswith("TorchScript"):
            present = any(plain) or any(wrapped)
        else:  # dynamo metadata counts even where it names no module (a model without children)
            present = any(s is not None for s in plain)
        if not present:
            continue
        if _placed(wrapped, known) > _placed(plain, known):
            return f"{scheme}, under the exporter's `{WRAPPER_SCOPE}` wrapper", wrapped
        return scheme, plain
    return "none", [None] * len(nodes)


def static_values(model: onnx.ModelProto) -> set[str]:
    """Values that do not depend on any graph input: initializers and what is computed from them."""
    static = {init.name for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" or (node.input and all(not n or n in static for n in node.input)):
            static.update(node.output)
    return static


def _ops(nodes: Iterable[onnx.NodeProto]) -> str:
    counts = Counter(n.op_type for n in nodes if n.op_type != "Constant")
    return ", ".join(op if count == 1 else f"{op} x{count}" for op, count in counts.items())


def align_capture(model: onnx.ModelProto, capture: Capture) -> Alignment:
    """Align every named module of a PyTorch ``capture`` with ``model``'s nodes."""
    modules = [name for name in capture.modules if name]
    calls = {m.name: m.calls for m in capture.modules.values()}
    outputs = {m.name: len(m.outputs32) for m in capture.modules.values()}
    return align(model, modules, calls=calls, outputs=outputs)


def align(
    model: onnx.ModelProto, modules: Sequence[str], *, calls: dict[str, int], outputs: dict[str, int]
) -> Alignment:
    """Align ``modules`` (paths, root excluded) given how often each ran and how many tensors it returned."""
    scheme, scopes = node_scopes(model, modules)
    graph_inputs = tuple(i.name for i in model.graph.input)
    result = Alignment(scheme, graph_inputs=graph_inputs)
    if scheme == "none":
        result.unaligned = {m: "the ONNX file carries no scope information" for m in modules}
        result.unscoped_nodes = len(model.graph.node)
        return result
    result.unscoped_nodes = sum(1 for s in scopes if not s)
    static = static_values(model)
    graph_outputs = {o.name for o in model.graph.output}
    members: dict[str, list[int]] = {}
    for index, chain in enumerate(scopes):
        for module in chain or ():
            members.setdefault(module, []).append(index)
    nodes = model.graph.node
    consumers: dict[str, list[int]] = {}
    for index, node in enumerate(nodes):
        for name in node.input:
            consumers.setdefault(name, []).append(index)
    for module in modules:
        if calls.get(module, 0) == 0:
            result.unaligned[module] = "never ran on this input"
            continue
        if calls[module] > 1:
            result.unaligned[module] = f"ran {calls[module]} times; hooks see one call, ONNX holds all"
            continue
        if outputs.get(module, 0) != 1:
            result.unaligned[module] = (
                f"returns {outputs.get(module, 0)} tensors; only single-tensor modules are aligned"
            )
            continue
        inside = members.get(module, [])
        if not inside:
            result.unaligned[module] = (
                "no ONNX node carries its scope (an identity, or folded into a neighbour)"
            )
            continue
        members_set = set(inside)
        escaping = [
            name for index in inside for name in nodes[index].output
            if name and (name in graph_outputs or any(c not in members_set for c in consumers.get(name, ())))
        ]  # fmt: skip
        produced = {name for index in inside for name in nodes[index].output}
        boundary = [
            name for index in inside for name in nodes[index].input
            if name and name not in produced and name not in static
        ]  # fmt: skip
        if not escaping:
            result.unaligned[module] = "none of its ONNX values is used outside it"
            continue
        result.aligned[module] = ModuleValues(
            module, escaping[-1], tuple(dict.fromkeys(boundary)), _ops(nodes[i] for i in inside)
        )
    return result
