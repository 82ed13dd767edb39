"""Run ONNX Runtime once with chosen intermediate values added as graph outputs."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from harness.core.errors import GateError, first_line
from harness.runtime.runners import ORT_LOG_SEVERITY

if TYPE_CHECKING:
    import numpy as np
    import onnx

UNOPTIMISED = "ORT_DISABLE_ALL"
PRODUCTION = "ORT_ENABLE_ALL"


# Initializers above this size enter shape inference as their type alone: inference needs the
# element types, and copying a model's weights (twice, inside onnx) would cost its size again.
SMALL_INITIALIZER_BYTES = 4096


def _value_types(model: onnx.ModelProto) -> dict[str, onnx.TypeProto]:
    """Element types of the graph's values, by shape inference over the graph without its weights."""
    import onnx

    light = onnx.ModelProto(ir_version=model.ir_version)
    light.opset_import.extend(model.opset_import)
    light.functions.extend(model.functions)
    graph = light.graph
    for part in ("node", "input", "output", "value_info"):
        getattr(graph, part).extend(getattr(model.graph, part))
    for init in model.graph.initializer:
        if init.ByteSize() <= SMALL_INITIALIZER_BYTES:
            graph.initializer.append(init)
        else:
            graph.initializer.add(name=init.name, dims=init.dims, data_type=init.data_type)
    try:
        inferred = onnx.shape_inference.infer_shapes(light)
    except Exception:  # types are a convenience here; float is the fallback
        inferred = light
    return {v.name: v.type for v in (*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input)}


def output_infos(model: onnx.ModelProto, values: Sequence[str]) -> list[onnx.ValueInfoProto]:
    """Graph outputs for ``values`` that are not outputs yet, typed where inference knows the type
    (ONNX Runtime needs an element type on every output)."""
    import onnx

    types = _value_types(model)
    present = {o.name for o in model.graph.output}
    infos = []
    for name in dict.fromkeys(values):
        if name in present:
            continue
        info = onnx.ValueInfoProto(name=name)
        known = types[name].tensor_type.elem_type if name in types else 0
        info.type.tensor_type.elem_type = known or onnx.TensorProto.FLOAT
        infos.append(info)
    return infos


def _marked_file(path: Path, values: Sequence[str], folder: Path) -> Path:
    import onnx

    model = onnx.load(str(path))
    model.graph.output.extend(output_infos(model, values))
    target = folder / "marked.onnx"
    onnx.save(model, str(target))
    return target


class Probe:
    """One ONNX Runtime session over ``model`` with ``values`` as extra outputs, for many feeds:
    the gate's module-level parity runs it on several cases and builds the session once."""

    def __init__(self, model: onnx.ModelProto | Path, values: Sequence[str], *, level: str, threads: int = 1) -> None:
        """``model`` as a proto, or as its file: then the marked copy passes through a temporary
        file, and no copy of the weights outlives this call besides ONNX Runtime's own."""
        self.level = level
        self.values = tuple(values)
        if isinstance(model, Path):
            with tempfile.TemporaryDirectory(prefix="onnx-gate-probe-") as folder:
                self.session = self._open(str(_marked_file(model, values, Path(folder))), level, threads)
            return
        added = output_infos(model, values)
        # Marked in place and restored: a copy of the model would hold its weights once more.
        model.graph.output.extend(added)
        try:
            serialized = model.SerializeToString()
        finally:
            del model.graph.output[len(model.graph.output) - len(added) :]
        self.session = self._open(serialized, level, threads)

    @staticmethod
    def _open(source: bytes | str, level: str, threads: int) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = ORT_LOG_SEVERITY
        # A diagnostic run, not a timed one: no second, pre-packed copy of the weights, and no arena
        # that keeps its intermediate values' memory after the run.
        options.add_session_config_entry("session.disable_prepacking", "1")
        options.enable_cpu_mem_arena = False
        try:
            return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise GateError(f"ONNX Runtime ({level}) failed on the marked graph: {first_line(exc, type(exc).__name__)}") from None

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every graph output and every requested value, by name."""
        names = [o.name for o in self.session.get_outputs()]
        try:
            inputs = {i.name: feeds[i.name] for i in self.session.get_inputs()}
            return dict(zip(names, self.session.run(names, inputs)))
        except KeyError as exc:
            raise GateError(f"the ONNX graph needs input {exc.args[0]!r}, which the feeds do not hold") from None
        except Exception as exc:
            raise GateError(f"ONNX Runtime ({self.level}) failed on the marked graph: {first_line(exc, type(exc).__name__)}") from None



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
    return Probe(model, values, level=level, threads=threads).run(feeds)
