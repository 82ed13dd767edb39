"""GPU latency: ONNX Runtime's CUDA execution provider via IOBinding, with and without a CUDA
graph, against PyTorch eager CUDA and PyTorch with a CUDA graph; then the GPU budgets.
A GPU number counts only after GPU parity passed. Without a GPU every test here skips, saying why."""

from __future__ import annotations

import pytest

from benchmarks.conftest import run_benchmark
from harness.checks.gpu_parity import check_gpu_parity
from harness.gate import gpu
from harness.bench.measure import LatencyRecord, check_gpu_budgets
from harness.runtime.export import example_feeds


@pytest.fixture(scope="session")
def cuda_ready(gate):
    from harness.gate.session import NotRun

    reason = gpu.unavailable_reason()
    if reason:
        gate.record("gpu_parity", NotRun(reason))
        pytest.skip(f"no GPU benchmark: {reason}")
    return True


@pytest.fixture(scope="session")
def gpu_parity(gate, cuda_ready):
    sizes = [gate.sizes_at(batch) for batch in gate.pinned_batches() or [None]]
    result = check_gpu_parity(gate.config, sizes, gate.torch_runner.infer, gpu.cuda_infer(gate))
    gate.record("gpu_parity", result)
    return result


@pytest.fixture(scope="session")
def gpu_peak_flops(cuda_ready) -> float:
    """The GPU's fp32 matmul peak with TF32 off, measured once in this session."""
    return gpu.matmul_peak_flops()


@pytest.mark.gate_check("gpu_parity")
def test_onnx_runtime_cuda_matches_the_cpu_fp32_reference(gpu_parity):
    assert gpu_parity, str(gpu_parity)


@pytest.mark.gate_check("latency_gpu")
@pytest.mark.parametrize("backend", gpu.GPU_BACKENDS)
def test_gpu_latency(benchmark, gate, gpu_parity, gpu_peak_flops, backend, bench_batch):
    if not gpu_parity:
        pytest.skip("GPU parity failed: a GPU latency would not count")
    sizes = gate.sizes_at(bench_batch)
    feeds = example_feeds(gate.config, sizes, seed=bench_batch)  # the same inputs for every runner
    with gpu.timed_call(gate, backend, feeds) as function:
        times = run_benchmark(benchmark, gate, function, group=f"cuda batch {bench_batch}")
    record = LatencyRecord.from_times(
        backend, "cuda", bench_batch, times, flops=gate.flops_per_call(bench_batch), peak_flops=gpu_peak_flops,
        extra={"tf32": False},
    )  # fmt: skip
    gate.record_latency(record)
    benchmark.extra_info.update(record.to_dict(samples=False))
    assert record.min > 0


@pytest.mark.gate_check("latency_gpu_budget")
def test_gpu_latency_meets_the_budgets(gate, gpu_parity):
    """Runs after the measurements above (same module, later in file order)."""
    budget = gate.config.budget
    if not budget.has_gpu_limits:
        pytest.skip("no GPU budget in config ([budget] min_gpu_speedup or max_latency_ms.cuda)")
    if not gpu_parity:
        pytest.skip("GPU parity failed: GPU latencies were not measured")
    result = check_gpu_budgets(gate.latency, budget)
    gate.record("latency_gpu_budget", result)
    assert result, str(result)
