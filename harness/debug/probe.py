"""Run ONNX Runtime once with chosen intermediate values added as graph outputs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence

from harness.errors import GateError, first_line

if TYPE_CHECKING:
    import numpy as np
    import onnx

UNOPTIMISED = "ORT_DISABLE_ALL"
PRODUCTION = "ORT_ENABLE_ALL"


def with_outputs(model: onnx.ModelProto, values: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``model`` that also returns ``values``; types come from shape inference where it
    knows them (ONNX Runtime needs an element type on every output)."""
    import onnx

    marked = onnx.ModelProto()
    marked.CopyFrom(model)
    try:
        inferred = onnx.shape_inference.infer_shapes(marked)
    except Exception:  # shapes are a convenience here; float is the fallback type
        inferred = marked
    types = {
        v.name: v.type for v in (*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input)
    }
    present = {o.name for o in marked.graph.output}
    for name in values:
        if name in present:
            continue
        info = onnx.ValueInfoProto(name=name)
        if name in types and types[name].tensor_type.elem_type:
            info.type.tensor_type.elem_type = types[name].tensor_type.elem_type
        else:
            info.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
        marked.graph.output.append(info)
        present.add(name)
    return marked


def run(
    model: onnx.ModelProto,
    feeds: Mapping[str, np.ndarray],
    values: Sequence[str],
    *,
    level: str,
    threads: int = 1,
) -> dict[str, np.ndarray]:
    """One ONNX Runtime session over ``model`` with ``values`` as extra outputs; every graph output
    and every requested value comes back by name."""
    import onnxruntime as ort

    marked = with_outputs(model, values)
    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(
            marked.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        names = [o.name for o in session.get_outputs()]
        inputs = {i.name: feeds[i.name] for i in session.get_inputs()}
        return dict(zip(names, session.run(names, inputs)))
    except KeyError as exc:
        raise GateError(f"the ONNX graph needs input {exc.args[0]!r}, which the feeds do not hold") from None
    except Exception as exc:
        first = first_line(exc, type(exc).__name__)
        raise GateError(f"ONNX Runtime ({level}) failed on the marked graph: {first}") from None
