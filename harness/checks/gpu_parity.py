"""GPU parity: the artifact on ONNX Runtime's CUDA execution provider against the CPU fp32 PyTorch
reference, on the pinned batch sizes and two input families. A GPU latency counts only after it
passed (benchmarks/test_gpu_latency.py; the CUDA runner is harness/gate/gpu.py).

GPU tolerance profile: ONNX Runtime CUDA is compared with the CPU fp32 PyTorch reference at
atol 1e-4, rtol 1e-3, with TF32 switched off in both frameworks. TF32 rounds matmul inputs to a
10-bit mantissa; on an H100 it moved LocalizationNet's outputs by ~2.4e-5 against fp32 where
``use_tf32=0`` gave ~1.2e-7 at the same speed, so a release gate measures with it off.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Mapping, Sequence

from harness.checks.declared import declare_check, never
from harness.compare.rule import ParityResult, compare_outputs
from harness.core.config import GateConfig, Tolerance
from harness.core.inputs import InputCase

if TYPE_CHECKING:
    import numpy as np

    Infer = Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]

# Run, and may fail, only where CUDA is; never required, since CI machines have no GPU.
CHECK = declare_check("gpu_parity", required=never, listed=False, order=96)
GPU_TOLERANCE = Tolerance(atol=1e-4, rtol=1e-3, mae=1e-5, noise_factor=0.0)


def check_gpu_parity(
    config: GateConfig, sizes: Sequence[dict[str, int]], reference: Infer, on_gpu: Infer
) -> ParityResult:
    """``on_gpu`` against the CPU fp32 ``reference`` at each of ``sizes``, normal and uniform inputs:
    the first failure, else the closest call."""
    worst: ParityResult | None = None
    for case_sizes in sizes:
        for family in ("normal", "uniform"):
            case = InputCase(family=family, sizes=case_sizes, seed=11)
            feeds = case.materialize(config)
            actual = on_gpu(feeds)
            result = compare_outputs(
                {n: actual[n] for n in config.outputs}, reference(feeds), config,
                candidate="onnxruntime-cuda (tf32 off)", reference="torch-cpu-float32",
                context=f"{family} inputs {case_sizes}", tolerances={n: GPU_TOLERANCE for n in config.outputs},
            )  # fmt: skip
            if not result:
                return result
            worst = result if worst is None else max(worst, result, key=lambda r: max(o.max_abs for o in r))
    assert worst is not None
    return worst
