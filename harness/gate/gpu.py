"""GPU measurement: ONNX Runtime's CUDA execution provider driven through IOBinding, with and
without a CUDA graph, against the two PyTorch paths a GPU user would pick instead of ONNX:
eager CUDA and a captured ``torch.cuda.CUDAGraph``. Every runner gets the same inputs, TF32 off,
and the same timing (a synchronising call, timed by pytest-benchmark).

Every GPU number counts only after GPU parity passed (harness/checks/gpu_parity.py, where the GPU
tolerance profile and the reason TF32 is off are written).
"""

from __future__ import annotations

import contextlib
import copy
import math
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

from harness.checks.gpu_parity import GPU_TOLERANCE
from harness.compare.rule import compare_outputs
from harness.core.errors import GateError, first_line
from harness.core.runner_kinds import PYTORCH, backends, kind_of
from harness.runtime.runners import OrtRunner, output_list

if TYPE_CHECKING:
    import numpy as np

    from harness.gate.session import GateSession

CUDA_PROVIDER = "CUDAExecutionProvider"
# The GPU benchmark backends, PyTorch baselines first (harness/core/runner_kinds.py).
GPU_BACKENDS = backends("cuda")
GRAPH_WARMUP_CALLS = 3  # eager calls on a side stream before capture: cuDNN picks its algorithms


@contextlib.contextmanager
def tf32_off() -> Iterator[None]:
    """PyTorch matmuls and cuDNN convolutions in full fp32 inside, the previous flags restored
    after. Kernels are chosen at launch (eager) or at capture (CUDA graph): both happen inside."""
    import torch

    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul
        torch.backends.cudnn.allow_tf32 = cudnn


def matmul_peak_flops(size: int = 4096, repeats: int = 20) -> float:
    """Best fp32 matrix-multiply rate of GPU 0 with TF32 off (CUDA events around each call): the
    GPU's counterpart of bench.sgemm_peak_flops, the yardstick of the efficiency column."""
    import torch

    with tf32_off():
        a, b = (torch.randn(size, size, device="cuda") for _ in range(2))
        out = torch.empty(size, size, device="cuda")
        for _ in range(3):
            torch.mm(a, b, out=out)
        torch.cuda.synchronize()
        best = math.inf
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            torch.mm(a, b, out=out)
            end.record()
            end.synchronize()
            best = min(best, start.elapsed_time(end) / 1e3)  # elapsed_time is in ms
        del a, b, out
        torch.cuda.empty_cache()
    return 2 * size**3 / best


def unavailable_reason() -> str | None:
    """Why GPU benchmarks cannot run here, or None when they can."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False)"
    import onnxruntime as ort

    if CUDA_PROVIDER not in ort.get_available_providers():
        return f"onnxruntime {ort.__version__} lacks {CUDA_PROVIDER} (install onnxruntime-gpu)"
    return None


def _cuda_session(gate: GateSession, *, cuda_graph: bool) -> Any:
    options = {"device_id": 0, "use_tf32": 0, "enable_cuda_graph": int(cuda_graph)}
    runner = gate.new_ort_runner(providers=[(CUDA_PROVIDER, options)])
    if runner.providers[0] != CUDA_PROVIDER:
        raise RuntimeError(f"ONNX Runtime fell back to {runner.providers[0]} instead of CUDA")
    assert isinstance(runner, OrtRunner)
    return runner.session


def _bound(session: Any, feeds: Mapping[str, np.ndarray], output_shapes: Mapping[str, tuple[int, ...]] | None) -> Any:
    """An IOBinding with inputs on the GPU and outputs on the GPU: no host copies in the loop.
    CUDA graphs replay fixed addresses, so for them outputs are preallocated too."""
    import numpy as np
    import onnxruntime as ort

    binding = session.io_binding()
    keep_alive = []
    for name, array in feeds.items():
        value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), "cuda", 0)
        keep_alive.append(value)
        binding.bind_ortvalue_input(name, value)
    for output in session.get_outputs():
        if output_shapes is None:
            binding.bind_output(output.name, "cuda", 0)
        else:
            value = ort.OrtValue.ortvalue_from_shape_and_type(output_shapes[output.name], np.float32, "cuda", 0)
            keep_alive.append(value)
            binding.bind_ortvalue_output(output.name, value)
    binding._onnx_gate_keep_alive = keep_alive  # OrtValues must outlive the binding
    return binding


def cuda_infer(gate: GateSession) -> Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]:
    """The artifact on ONNX Runtime's CUDA EP (TF32 off) through IOBinding, as a plain call from
    feeds to outputs: what the GPU parity check (harness/checks/gpu_parity.py) judges."""
    session = _cuda_session(gate, cuda_graph=False)

    def infer(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        binding = _bound(session, feeds, None)
        session.run_with_iobinding(binding)
        return dict(zip([o.name for o in session.get_outputs()], binding.copy_outputs_to_cpu()))

    return infer


@contextlib.contextmanager
def timed_call(gate: GateSession, backend: str, feeds: Mapping[str, np.ndarray]) -> Iterator[Callable[[], Any]]:
    """A synchronising call of ``backend`` on the GPU: each call's time is the real GPU time."""
    kind = kind_of(backend, "cuda")
    if kind is None:
        raise ValueError(f"unknown GPU backend {backend!r}; valid: {', '.join(GPU_BACKENDS)}")
    with tf32_off():
        if kind.framework == PYTORCH:
            with _torch_call(gate, feeds, cuda_graph=kind.cuda_graph) as call:
                yield call
        else:
            yield _ort_call(gate, feeds, cuda_graph=kind.cuda_graph)


@contextlib.contextmanager
def _torch_call(gate: GateSession, feeds: Mapping[str, np.ndarray], *, cuda_graph: bool) -> Iterator[Callable[[], Any]]:
    import torch

    model = copy.deepcopy(gate.model).cuda().eval()
    tensors = [torch.from_numpy(feeds[s.name]).cuda() for s in gate.config.inputs]
    graph = None
    try:
        if cuda_graph:
            graph, outputs = _capture(model, tensors)
            graph.replay()
            torch.cuda.synchronize()
            _check_graph_outputs(gate, feeds, outputs)

            def call() -> None:
                graph.replay()
                torch.cuda.synchronize()

        else:

            def call() -> None:
                with torch.inference_mode():
                    model(*tensors)
                torch.cuda.synchronize()

        yield call
    finally:
        del model, tensors, graph
        torch.cuda.empty_cache()


def _capture(model: Any, tensors: list[Any]) -> tuple[Any, Any]:
    """One forward pass captured into a ``torch.cuda.CUDAGraph``, the documented way: warm-up
    on a side stream, then capture; replay reads ``tensors`` and rewrites the returned outputs."""
    import torch

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side), torch.no_grad():
        for _ in range(GRAPH_WARMUP_CALLS):
            model(*tensors)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.cuda.graph(graph):
        outputs = model(*tensors)
    return graph, outputs


def _check_graph_outputs(gate: GateSession, feeds: Mapping[str, np.ndarray], outputs: Any) -> None:
    """A replayed graph must compute what the CPU fp32 reference computes, or its time is moot."""
    actual = {n: t.detach().cpu().numpy() for n, t in zip(gate.config.outputs, output_list(outputs, gate.config.outputs))}
    result = compare_outputs(
        actual, gate.torch_runner.infer(feeds), gate.config, candidate="torch-cuda-graph (tf32 off)",
        reference="torch-cpu-float32", context="benchmark inputs",
        tolerances={n: GPU_TOLERANCE for n in gate.config.outputs},
    )  # fmt: skip
    if not result:
        raise GateError(f"PyTorch CUDA graph replay differs from PyTorch on the CPU: {first_line(result)}")


def _ort_call(gate: GateSession, feeds: Mapping[str, np.ndarray], *, cuda_graph: bool) -> Callable[[], Any]:
    session = _cuda_session(gate, cuda_graph=cuda_graph)
    shapes = {name: value.shape for name, value in gate.ort_runner.infer(feeds).items()} if cuda_graph else None
    binding = _bound(session, feeds, shapes)
    if cuda_graph:
        session.run_with_iobinding(binding)  # the first run captures the graph

    def call() -> None:
        session.run_with_iobinding(binding)
        binding.synchronize_outputs()

    return call
