"""GPU measurement: PyTorch eager on CUDA and ONNX Runtime's CUDA execution provider driven
through IOBinding, with and without CUDA graphs.

GPU tolerance profile: ONNX Runtime CUDA is compared with the CPU fp32 PyTorch reference at
atol 1e-4, rtol 1e-3, with TF32 switched off in both frameworks. TF32 rounds matmul inputs to a
10-bit mantissa; on an H100 it moved LocalizationNet's outputs by ~2.4e-5 against fp32 where
``use_tf32=0`` gave ~1.2e-7 at the same speed, so a release gate measures with it off.
"""

from __future__ import annotations

import contextlib
import copy
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

from harness.compare import ParityResult, compare_outputs
from harness.config import Tolerance
from harness.strategies import InputCase

if TYPE_CHECKING:
    import numpy as np

    from harness.session import GateSession

GPU_TOLERANCE = Tolerance(atol=1e-4, rtol=1e-3, mae=1e-5, noise_factor=0.0)
CUDA_PROVIDER = "CUDAExecutionProvider"


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
    from harness.runners import OrtRunner

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


def check_gpu_parity(gate: GateSession) -> ParityResult:
    """ORT CUDA vs the CPU fp32 PyTorch reference on the pinned batch sizes, two input families."""
    session = _cuda_session(gate, cuda_graph=False)
    worst: ParityResult | None = None
    batches = gate.pinned_batches() or [None]
    for batch in batches:
        for family in ("normal", "uniform"):
            sizes = {**gate.config.trace_sizes, **({gate.batch_dim: batch} if gate.batch_dim else {})}
            case = InputCase(family=family, sizes=sizes, seed=11)
            feeds = case.materialize(gate.config.inputs)
            expected = gate.torch_runner.infer(feeds)
            binding = _bound(session, feeds, None)
            session.run_with_iobinding(binding)
            actual = dict(zip([o.name for o in session.get_outputs()], binding.copy_outputs_to_cpu()))
            result = compare_outputs(
                {n: actual[n] for n in gate.config.outputs}, expected, gate.config,
                candidate="onnxruntime-cuda (tf32 off)", reference="torch-cpu-float32",
                context=f"{family} inputs {sizes}", tolerances={n: GPU_TOLERANCE for n in gate.config.outputs},
            )  # fmt: skip
            if not result:
                return result
            worst = result if worst is None else max(worst, result, key=lambda r: max(o.max_abs for o in r))
    assert worst is not None
    return worst


@contextlib.contextmanager
def timed_call(gate: GateSession, backend: str, feeds: Mapping[str, np.ndarray]) -> Iterator[Callable[[], Any]]:
    """A synchronising call of ``backend`` on the GPU: each call's time is the real GPU time."""
    import torch

    if backend == "pytorch":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        model = copy.deepcopy(gate.model).cuda().eval()
        tensors = [torch.from_numpy(feeds[s.name]).cuda() for s in gate.config.inputs]

        def call() -> None:
            with torch.inference_mode():
                model(*tensors)
            torch.cuda.synchronize()

        try:
            yield call
        finally:
            del model, tensors
            torch.cuda.empty_cache()
        return

    cuda_graph = backend == "onnxruntime-cudagraph"
    session = _cuda_session(gate, cuda_graph=cuda_graph)
    shapes = {name: value.shape for name, value in gate.ort_runner.infer(feeds).items()} if cuda_graph else None
    binding = _bound(session, feeds, shapes)
    if cuda_graph:
        session.run_with_iobinding(binding)  # the first run captures the graph

    def call() -> None:
        session.run_with_iobinding(binding)
        binding.synchronize_outputs()

    yield call
