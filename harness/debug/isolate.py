"""The culprit alone: its ONNX subgraph, fed the very tensors PyTorch fed the module, shows the
module's own error apart from anything it inherited."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping

from harness.align import probe
from harness.compare.rule import compare_noise
from harness.core.errors import first_line

if TYPE_CHECKING:
    import numpy as np
    import onnx

    from harness.align.capture import ModuleCall
    from harness.align.scopes import ModuleValues
    from harness.align.verdict import ModuleRow


@dataclass
class Isolation:
    module: str
    subgraph: onnx.ModelProto | None = None
    feeds: dict[str, np.ndarray] = field(default_factory=dict)
    expected32: np.ndarray | None = None
    expected64: np.ndarray | None = None
    output: str = ""
    max_abs: float = 0.0
    floor: float | None = None
    ratio: float | None = None
    exceeds: bool = False
    problem: str = ""  # why it could not be isolated
    nonfinite: int = 0  # NaN/Inf values where PyTorch's are finite

    def __str__(self) -> str:
        if self.problem:
            return f"not isolated: {self.problem}"
        verdict = "FAILED" if self.exceeds else "PASSED"
        if self.nonfinite:
            return (
                f"{verdict} | {self.module} alone, on PyTorch's own inputs: NaN/Inf in {self.nonfinite} "
                "values where PyTorch's are finite"
            )
        floor = (
            f"floor {self.floor:.3g}, ratio {self.ratio:.3g}" if self.floor is not None else "no fp64 floor"
        )
        return (
            f"{verdict} | {self.module} alone, on PyTorch's own inputs: "
            f"max abs error {self.max_abs:.3g} ({floor})"
        )


def _value_info(name: str, array: np.ndarray) -> onnx.ValueInfoProto:
    from onnx import helper

    return helper.make_tensor_value_info(
        name, helper.np_dtype_to_tensor_dtype(array.dtype), list(array.shape)
    )


def extract(
    model: onnx.ModelProto, inputs: Mapping[str, np.ndarray], output: str, output_array: np.ndarray
) -> onnx.ModelProto:
    """The nodes between ``inputs`` and ``output``, with the initializers they use."""
    import onnx
    from onnx.utils import Extractor

    source = onnx.ModelProto()
    source.CopyFrom(model)
    # Extractor needs a value_info for every boundary value; the arrays give exact ones.
    known = {*inputs, output}
    kept = [v for v in source.graph.value_info if v.name not in known]
    del source.graph.value_info[:]
    source.graph.value_info.extend(
        [*kept, *(_value_info(n, a) for n, a in inputs.items()), _value_info(output, output_array)]
    )
    subgraph = Extractor(source).extract_model(list(inputs), [output])
    onnx.checker.check_model(subgraph)
    return subgraph


def isolate(
    model: onnx.ModelProto, row: ModuleRow, where: ModuleValues, call: ModuleCall,
    graph_feeds: Mapping[str, np.ndarray], factor: float, *, level: str = "ORT_DISABLE_ALL",
) -> Isolation:  # fmt: skip

    result = Isolation(row.module, output=where.output)
    feeds: dict[str, np.ndarray] = {}
    for name in where.inputs:
        if name in graph_feeds:
            feeds[name] = graph_feeds[name]
        elif name in row.input_map:
            feeds[name] = call.inputs32[row.input_map[name]]
        else:
            result.problem = f"its ONNX input {name!r} matches no tensor PyTorch passed to the module"
            return result
    result.feeds = feeds
    result.expected32 = call.outputs32[0]
    result.expected64 = call.outputs64[0] if call.outputs64 else None
    try:
        result.subgraph = extract(model, feeds, where.output, result.expected32)
        actual = probe.run(result.subgraph, feeds, [], level=level)[where.output]
    except Exception as exc:  # a subgraph the extractor or the checker rejects: say so, keep the rest
        first = first_line(exc, type(exc).__name__)
        result.problem = f"subgraph extraction failed: {first}"
        return result
    import numpy as np

    difference = np.abs(actual.astype(np.float64) - result.expected32.astype(np.float64))
    result.max_abs = float(difference[np.isfinite(difference)].max(initial=0.0))
    result.nonfinite = int(np.count_nonzero(~np.isfinite(actual) & np.isfinite(result.expected32)))
    if result.expected64 is not None:
        noise = compare_noise(row.module, actual, result.expected32, result.expected64, factor)
        result.floor, result.ratio, result.exceeds = noise.floor_max, noise.ratio, not noise.passed
    else:
        result.exceeds = row.exceeds or bool(result.nonfinite)
    return result
