"""The runtimes the gate measures, one entry each: a backend on a device, which framework runs it
(PyTorch, the reference, or ONNX Runtime, the artifact), how the reports name it, and whether it
replays a CUDA graph. Benchmarks, budgets, reports and config validation read this table; adding a
runtime (e.g. another execution provider) is one entry here and its timed call (harness/gate/gpu.py).
"""

from __future__ import annotations

from dataclasses import dataclass

PYTORCH = "pytorch"
ONNXRUNTIME = "onnxruntime"


@dataclass(frozen=True)
class RunnerKind:
    backend: str  # the name in benchmark records, test ids and config keys
    device: str  # "cpu" or "cuda"
    framework: str  # PYTORCH or ONNXRUNTIME
    label: str  # how the reports name it
    short: str = ""  # a PyTorch baseline's name in a speedup cell ("1.20x eager")
    cuda_graph: bool = False
    design_claim: str = ""  # the original design's latency claim at batch 1, shown beside the number


KINDS = (
    RunnerKind(PYTORCH, "cpu", PYTORCH, "PyTorch CPU", design_claim="40-50 ms"),
    RunnerKind(ONNXRUNTIME, "cpu", ONNXRUNTIME, "ONNX Runtime CPU", design_claim="20-30 ms"),
    # On a GPU, PyTorch baselines first: ONNX Runtime is compared with each.
    RunnerKind(PYTORCH, "cuda", PYTORCH, "PyTorch eager", short="eager"),
    RunnerKind("pytorch-cuda-graph", "cuda", PYTORCH, "PyTorch CUDA graph", short="graph", cuda_graph=True),
    RunnerKind(ONNXRUNTIME, "cuda", ONNXRUNTIME, "ONNX Runtime CUDA", design_claim="< 5 ms"),
    RunnerKind("onnxruntime-cudagraph", "cuda", ONNXRUNTIME, "ONNX Runtime CUDA graph", cuda_graph=True,
               design_claim="< 5 ms"),
)  # fmt: skip
SPEEDUP_CLAIM_CPU = "1.5-2.5x"  # the original design's ONNX Runtime over PyTorch on the CPU


def kind_of(backend: str, device: str) -> RunnerKind | None:
    """The kind of ``backend`` on ``device``; None for a runner outside the table (a candidate)."""
    return next((k for k in KINDS if k.backend == backend and k.device == device), None)


def backends(device: str, framework: str | None = None) -> tuple[str, ...]:
    """The backends measured on ``device`` (of ``framework`` only, when given), in table order."""
    return tuple(k.backend for k in KINDS if k.device == device and framework in (None, k.framework))


def runs_onnxruntime(backend: str, device: str) -> bool:
    kind = kind_of(backend, device)
    return kind is not None and kind.framework == ONNXRUNTIME


def label(backend: str, device: str) -> str:
    kind = kind_of(backend, device)
    return kind.label if kind is not None else f"{backend} on {device}"
