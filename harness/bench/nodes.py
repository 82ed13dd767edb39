"""The roofline per node: what a sequential executor could reach, node by node.

The whole-model roofline, ``max(FLOPs / peak, bytes / bandwidth)``, is a limit no executor reaches:
ONNX Runtime runs the nodes one after another, so it pays the compute-bound convolutions and the
memory-bound MatMuls and elementwise ops each at its own limit. The limit of a sequential executor
is the sum over nodes of each node's own bound.

Each node's time, op and tensor shapes come from ONNX Runtime's own profile of the artifact as it
runs (``SessionOptions.enable_profiling``: the optimised graph, fused nodes included), so the nodes
are the ones that run. Per node:

- FLOPs: for Conv (and FusedConv), 2 x output elements x the weight's elements per output channel;
  for MatMul, Gemm and their fused forms, 2 x output elements x the shared dimension K; for every
  other op, its output elements (normalisations and softmax 5 each): those are memory-bound, and
  their FLOPs hardly move their bound.
- Bytes: its weights as stored (the profile's ``parameter_size``), plus the activations it reads
  and writes (``activation_size`` + ``output_size``) where those exceed the last-level cache.
- Bound: ``max(FLOPs / peak, bytes / bandwidth)``, with the sgemm peak and read bandwidth the
  gate measured in the same session.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from harness.runtime.runners import ORT_LOG_SEVERITY

MATMUL_OPS = {"MatMul", "Gemm", "FusedGemm", "FusedMatMul", "MatMulInteger", "QLinearMatMul"}
CONV_OPS = {"Conv", "FusedConv", "ConvInteger", "QLinearConv"}
NORMALISATION_OPS = {"LayerNormalization", "SkipLayerNormalization", "BatchNormalization", "InstanceNormalization",
                     "GroupNormalization", "Softmax", "LogSoftmax", "SimplifiedLayerNormalization"}  # fmt: skip
SHOWN = 5  # nodes listed as furthest from their bound


def _elements(shape: Sequence[int]) -> int:
    return math.prod(int(d) for d in shape) if shape else 1


def _shapes(entries: Sequence[Mapping[str, Sequence[int]]]) -> list[list[int]]:
    """``[{"float": [1, 96, 32, 8]}, ...]`` (the profile's form) as plain shapes."""
    return [list(next(iter(entry.values()))) for entry in entries if entry]


def node_flops(op: str, inputs: Sequence[Sequence[int]], outputs: Sequence[Sequence[int]]) -> float:
    """Floating-point operations of one node from its op and shapes (see the module's doc)."""
    if not outputs:
        return 0.0
    out = _elements(outputs[0])
    if op in CONV_OPS and len(inputs) >= 2 and len(outputs[0]) >= 2 and inputs[1]:
        per_output_channel = _elements(inputs[1]) / max(int(inputs[1][0]), 1)
        return 2.0 * out * per_output_channel
    if op in MATMUL_OPS and inputs and inputs[0]:
        rows = _elements(outputs[0][:-1]) if len(outputs[0]) > 1 else 1
        shared = _elements(inputs[0]) / max(rows, 1) if op in ("Gemm", "FusedGemm") else int(inputs[0][-1])
        return 2.0 * out * shared
    return float(out) * (5 if op in NORMALISATION_OPS else 1)


@dataclass(frozen=True)
class NodeCost:
    name: str
    op: str
    seconds: float  # mean measured time per call
    flops: float
    bytes: float
    bound_s: float
    bound: str  # "compute" or "memory"

    @property
    def lost_s(self) -> float:
        return self.seconds - self.bound_s

    def achieved(self, peak_flops: float, bandwidth: float) -> str:
        """What the node reached against its own limit: "13 GB/s of 26.7 measured"."""
        if self.bound == "memory":
            return f"{self.bytes / self.seconds / 1e9:.3g} GB/s of {bandwidth / 1e9:.3g} measured"
        return f"{self.flops / self.seconds / 1e9:.3g} GFLOP/s of {peak_flops / 1e9:.3g} measured"


@dataclass(frozen=True)
class NodeRoofline:
    """One artifact's per-node roofline at one batch size."""

    nodes: tuple[NodeCost, ...]
    peak_flops: float
    bandwidth: float
    cache_bytes: int
    calls: int  # profiled calls the times are the mean of

    @property
    def bound_s(self) -> float:
        """The limit of a sequential executor: the sum of the nodes' own bounds."""
        return sum(node.bound_s for node in self.nodes)

    @property
    def profiled_s(self) -> float:
        return sum(node.seconds for node in self.nodes)

    def furthest(self, count: int = SHOWN) -> list[NodeCost]:
        """The nodes that lose the most time against their own bound."""
        return sorted(self.nodes, key=lambda node: node.lost_s, reverse=True)[:count]

    def efficiency(self, median_s: float) -> float:
        return self.bound_s / median_s if median_s > 0 else math.nan

    def to_dict(self, median_s: float | None = None) -> dict[str, Any]:
        by_bound = {kind: sum(n.bound_s for n in self.nodes if n.bound == kind) for kind in ("compute", "memory")}
        return {
            "nodes": len(self.nodes), "profiled_calls": self.calls,
            "bound_ms": self.bound_s * 1e3, "profiled_ms": self.profiled_s * 1e3,
            "compute_bound_ms": by_bound["compute"] * 1e3, "memory_bound_ms": by_bound["memory"] * 1e3,
            "efficiency": self.efficiency(median_s) if median_s else None,
            "last_level_cache_bytes": self.cache_bytes,
            "furthest": [
                {"node": n.name, "op": n.op, "ms": n.seconds * 1e3, "bound_ms": n.bound_s * 1e3, "bound": n.bound,
                 "achieved": n.achieved(self.peak_flops, self.bandwidth)}
                for n in self.furthest()
            ],
        }  # fmt: skip


def roofline_from_profile(
    events: Sequence[Mapping[str, Any]], *, peak_flops: float, bandwidth: float, cache_bytes: int, skip_calls: int = 1
) -> NodeRoofline:
    """The per-node roofline from ONNX Runtime profile events (its JSON trace), leaving out the
    first ``skip_calls`` calls (warm-up: arenas allocated, kernels chosen)."""
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    starts = sorted(float(e["ts"]) for e in runs)
    after = starts[skip_calls] if len(starts) > skip_calls else -math.inf
    calls = max(len(starts) - skip_calls, 1)
    totals: dict[str, dict[str, Any]] = {}
    for event in events:
        if event.get("cat") != "Node" or not str(event.get("name", "")).endswith("_kernel_time"):
            continue
        if float(event.get("ts", 0)) < after:
            continue
        args = event.get("args", {})
        name = str(event["name"]).removesuffix("_kernel_time")
        entry = totals.setdefault(name, {"op": args.get("op_name", "?"), "us": 0.0, "args": args})
        entry["us"] += float(event.get("dur", 0))
    nodes = []
    for name, entry in totals.items():
        args = entry["args"]
        inputs, outputs = _shapes(args.get("input_type_shape", [])), _shapes(args.get("output_type_shape", []))
        flops = node_flops(entry["op"], inputs, outputs)
        activations = float(args.get("activation_size", 0)) + float(args.get("output_size", 0))
        moved = float(args.get("parameter_size", 0)) + (activations if activations > cache_bytes else 0.0)
        compute_s, memory_s = flops / peak_flops, moved / bandwidth
        nodes.append(NodeCost(
            name, entry["op"], entry["us"] / 1e6 / calls, flops, moved, max(compute_s, memory_s),
            "compute" if compute_s >= memory_s else "memory",
        ))  # fmt: skip
    return NodeRoofline(tuple(nodes), peak_flops, bandwidth, cache_bytes, calls)


def profile_nodes(
    path: Path, feeds: Mapping[str, Any], *, threads: int, calls: int = 10, graph_optimization: str = "ORT_ENABLE_ALL"
) -> list[dict[str, Any]]:
    """ONNX Runtime's profile events for ``calls`` + 1 runs of the artifact on ``feeds``, in a
    session of its own (profiling slows each node a little, so the benchmark's own session is not it)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, graph_optimization)
    options.log_severity_level = ORT_LOG_SEVERITY
    with tempfile.TemporaryDirectory(prefix="onnx-gate-profile-") as scratch:
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(scratch) / "nodes")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        for _ in range(calls + 1):
            session.run(None, dict(feeds))
        trace = Path(session.end_profiling())
        events = json.loads(trace.read_text(encoding="utf-8"))
        del session
    return list(events)
