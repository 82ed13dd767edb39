"""GPU latency: PyTorch eager on CUDA and ONNX Runtime's CUDA execution provider via IOBinding,
with and without CUDA graphs. A GPU number counts only after GPU parity passed."""

from __future__ import annotations

import pytest

from benchmarks.conftest import run_benchmark
from harness import gpu
from harness.bench import LatencyRecord
from harness.export import example_feeds


@pytest.fixture(scope="session")
def cuda_ready(gate):
    reason = gpu.unavailable_reason()
    if reason:
        pytest.skip(f"no GPU benchmark: {reason}")
    return True


@pytest.fixture(scope="session")
def gpu_parity(gate, cuda_ready):
    result = gpu.check_gpu_parity(gate)
    gate.gpu_parity = result
    return result


@pytest.mark.gate_check("gpu_parity")
def test_onnx_runtime_cuda_matches_the_cpu_fp32_reference(gpu_parity):
    assert gpu_parity, str(gpu_parity)


@pytest.mark.gate_check("latency_gpu")
@pytest.mark.parametrize("backend", ["pytorch", "onnxruntime", "onnxruntime-cudagraph"])
def test_gpu_latency(benchmark, gate, gpu_parity, backend, bench_batch):
    if not gpu_parity:
        pytest.skip("GPU parity failed: a GPU latency would not count")
    sizes = {**gate.config.trace_sizes, **({gate.batch_dim: bench_batch} if gate.batch_dim else {})}
    feeds = example_feeds(gate.config, sizes, seed=bench_batch)
    with gpu.timed_call(gate, backend, feeds) as function:
        times = run_benchmark(benchmark, gate, function, group=f"cuda batch {bench_batch}")
    record = LatencyRecord.from_times(backend, "cuda", bench_batch, times, flops=gate.flops_per_call(bench_batch))
    gate.record_latency(record)
    benchmark.extra_info.update(record.to_dict())
    assert record.min > 0
