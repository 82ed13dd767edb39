"""The contract: the graph's interface is the one the config promises, and nothing in it is
random or training-only."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from harness.checks.declared import declare_check
from harness.core.config import GateConfig

if TYPE_CHECKING:
    import onnx

# ONNX elem_type numbers by numpy-style dtype name (onnx.TensorProto values).
ONNX_DTYPES = {
    "float32": 1, "uint8": 2, "int8": 3, "int32": 6, "int64": 7, "bool": 9,
    "float16": 10, "float64": 11,
}  # fmt: skip
RANDOM_OPS = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}


CHECK = declare_check("contract", order=20)


@dataclass(frozen=True)
class ContractResult:
    problems: tuple[str, ...]

    def __bool__(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        if not self.problems:
            return "PASSED | the ONNX interface matches the config and the graph is inference-only"
        return "FAILED | " + "; ".join(self.problems)


def _shape(value_info: onnx.ValueInfoProto) -> list[int | str | None]:
    tensor = value_info.type.tensor_type
    if not tensor.HasField("shape"):
        return []
    return [d.dim_param if d.HasField("dim_param") else (d.dim_value if d.HasField("dim_value") else None) for d in tensor.shape.dim]


def _all_nodes(model: onnx.ModelProto) -> Iterator[onnx.NodeProto]:
    """Every node: the main graph, subgraphs of If/Loop/Scan, and local functions."""
    import onnx

    stack = [model.graph, *(f for f in model.functions)]
    while stack:
        graph = stack.pop()
        for node in graph.node:
            yield node
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:
                    stack.append(attribute.g)
                stack.extend(attribute.graphs)


def _constant_value(model: onnx.ModelProto, name: str) -> bool | None:
    """The boolean value of an initializer or Constant output ``name``; None when not constant."""
    from onnx import numpy_helper

    for init in model.graph.initializer:
        if init.name == name:
            return bool(numpy_helper.to_array(init).all())
    for node in model.graph.node:
        if node.op_type == "Constant" and name in node.output:
            for attribute in node.attribute:
                if attribute.name == "value":
                    return bool(numpy_helper.to_array(attribute.t).all())
    return None


def training_only_ops(model: onnx.ModelProto) -> list[str]:
    problems = []
    for node in _all_nodes(model):
        label = f"{node.op_type} node {node.name or node.output[0]!r}"
        if node.op_type in RANDOM_OPS:
            problems.append(f"{label} is random: outputs would change from run to run")
        elif node.op_type == "Dropout":
            training = node.input[2] if len(node.input) > 2 and node.input[2] else ""
            if training and _constant_value(model, training) is not False:
                problems.append(f"{label} runs in training mode")
        elif node.op_type == "BatchNormalization":
            training_mode = next((a.i for a in node.attribute if a.name == "training_mode"), 0)
            if training_mode or len([o for o in node.output if o]) > 1:
                problems.append(f"{label} computes batch statistics (exported in training mode)")
    return problems


def check_contract(model_path: Path, config: GateConfig, *, model_output_problem: str | None = None) -> ContractResult:
    """The ONNX file against the config; ``model_output_problem`` is what the PyTorch model's own
    output names say against the config (see runners.output_name_problem)."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    initializers = {init.name for init in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in initializers]
    problems: list[str] = [model_output_problem] if model_output_problem else []

    expected_inputs = [spec.name for spec in config.inputs]
    actual_inputs = [i.name for i in graph_inputs]
    if actual_inputs != expected_inputs:
        problems.append(f"inputs are {actual_inputs}, the config declares {expected_inputs}")
    actual_outputs = [o.name for o in model.graph.output]
    if actual_outputs != list(config.outputs):
        problems.append(f"outputs are {actual_outputs}, the config declares {list(config.outputs)}")

    by_name = {i.name: i for i in graph_inputs}
    for spec in config.inputs:
        if spec.name not in by_name:
            continue
        value = by_name[spec.name]
        elem_type = value.type.tensor_type.elem_type
        if elem_type != ONNX_DTYPES[spec.dtype]:
            actual = onnx.helper.tensor_dtype_to_np_dtype(elem_type) if elem_type else "undefined"
            problems.append(f"input {spec.name!r} is {actual}, the config declares {spec.dtype}")
        shape = _shape(value)
        if len(shape) != len(spec.shape):
            problems.append(f"input {spec.name!r} has rank {len(shape)}, the config declares {len(spec.shape)} ({list(spec.shape)})")
            continue
        for axis, (declared, actual_dim) in enumerate(zip(spec.shape, shape)):
            if isinstance(declared, str) and not isinstance(actual_dim, str):
                problems.append(
                    f"input {spec.name!r} axis {axis} ({declared!r}) is fixed to {actual_dim} in the graph; "
                    f"export it as a dynamic dimension"
                )
            elif isinstance(declared, int) and isinstance(actual_dim, int) and declared != actual_dim:
                problems.append(f"input {spec.name!r} axis {axis} is {actual_dim}, the config declares {declared}")
    for output in model.graph.output:
        if output.type.tensor_type.elem_type == 0:
            problems.append(f"output {output.name!r} has no declared element type")
    problems += training_only_ops(model)
    return ContractResult(tuple(problems))
