"""CPU latency: PyTorch eager vs ONNX Runtime at each configured batch size, then the budgets."""

from __future__ import annotations

import pytest

from benchmarks.conftest import run_benchmark
from harness.bench.measure import LatencyRecord, check_budgets
from harness.runtime.export import example_feeds


@pytest.mark.gate_check("latency_cpu")
def test_cpu_latency(benchmark, gate, bench_threads, bench_backend, bench_batch):
    sizes = gate.sizes_at(bench_batch)
    feeds = example_feeds(gate.config, sizes, seed=bench_batch)
    if bench_backend == "pytorch":
        runner = gate.torch_runner
        tensors = runner.to_tensors(feeds)
        function = lambda: runner.forward(tensors)  # noqa: E731
    else:
        session = gate.bench_ort_runner.session
        function = lambda: session.run(None, feeds)  # noqa: E731
    times = run_benchmark(benchmark, gate, function, group=f"cpu batch {bench_batch}")
    record = LatencyRecord.from_times(
        bench_backend, "cpu", bench_batch, times,
        flops=gate.flops_per_call(bench_batch), peak_flops=gate.sgemm_peak,
        bytes_moved=gate.bytes_per_call(bench_batch, None if bench_backend == "pytorch" else gate.artifact.path),
        bandwidth=gate.bandwidth,
        extra={"threads": bench_threads, "ort_graph_optimization": gate.bench_ort_runner.graph_optimization},
    )  # fmt: skip
    gate.record_latency(record)
    benchmark.extra_info.update(record.to_dict(samples=False))
    assert record.min > 0 and record.rounds >= gate.bench_plan.min_rounds


@pytest.mark.gate_check("latency_budget")
def test_cpu_latency_meets_the_budgets(gate):
    """Runs after the measurements above (same module, later in file order)."""
    cpu = [r for r in gate.latency if r.device == "cpu"]
    if not cpu:
        pytest.skip("no CPU latency was measured in this session, so no budget can be judged")
    result = check_budgets(gate.latency, gate.config.budget, gate.config.bench.batches)
    gate.record("latency_budget", result)
    assert result, str(result)
