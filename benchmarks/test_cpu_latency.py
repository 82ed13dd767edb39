"""CPU latency: PyTorch eager vs ONNX Runtime at each configured batch size, then the budgets.

Both backends of a batch size are timed in one interleaved loop (harness/bench/interleave.py), so
a burst of load from another process lands on both and their ratio holds; each backend's test then
reports its own times through pytest-benchmark."""

from __future__ import annotations

import pytest

from benchmarks.conftest import record_times
from harness.bench.interleave import BLOCK, measure_interleaved
from harness.bench.load import LoadSnapshot, load_between
from harness.bench.measure import (
    LatencyRecord, check_budgets, last_level_cache_bytes, percentile, rounds_for, time_calls,
)
from harness.bench.nodes import profile_nodes, roofline_from_profile
from harness.runtime.export import example_feeds

BACKENDS = ("pytorch", "onnxruntime")


@pytest.fixture(scope="session")
def cpu_measurements() -> dict[int, dict[str, object]]:
    """Per batch size: both backends' times from one interleaved loop, and the machine's load."""
    return {}


def _measure_both(gate, batch: int) -> dict[str, object]:
    feeds = example_feeds(gate.config, gate.sizes_at(batch), seed=batch)
    torch_runner = gate.torch_runner
    tensors = torch_runner.to_tensors(feeds)
    session = gate.bench_ort_runner.session
    functions = {"pytorch": lambda: torch_runner.forward(tensors), "onnxruntime": lambda: session.run(None, feeds)}
    plan = gate.bench_plan
    warmup = {name: min(time_calls(function, plan.warmup_rounds)) for name, function in functions.items()}
    # The time both backends' benchmarks had when each ran alone, at the same minimum of rounds each.
    rounds = rounds_for((BLOCK + 1) * sum(warmup.values()), budget_s=plan.budget_s * len(functions),
                        min_rounds=-(-plan.min_rounds // BLOCK), max_rounds=-(-plan.max_rounds // BLOCK))
    before = LoadSnapshot.now()
    times = measure_interleaved(functions, rounds)
    return {"times": times, "load": load_between(before, LoadSnapshot.now()), "feeds": feeds}


@pytest.mark.gate_check("latency_cpu")
def test_cpu_latency(benchmark, gate, bench_threads, bench_backend, bench_batch, cpu_measurements):
    if benchmark.disabled:
        pytest.skip("benchmarks are disabled (--benchmark-disable): no latency measured")
    if bench_batch not in cpu_measurements:
        cpu_measurements[bench_batch] = _measure_both(gate, bench_batch)
    measured = cpu_measurements[bench_batch]
    times = measured["times"][bench_backend]
    record_times(benchmark, times, group=f"cpu batch {bench_batch}")
    extra = {"threads": bench_threads, "ort_graph_optimization": gate.bench_ort_runner.graph_optimization,
             "interleaved_with": list(BACKENDS), "block": BLOCK, "load": measured["load"]}
    if bench_backend == "onnxruntime":
        # The limit of a sequential executor, node by node (harness/bench/nodes.py), from a
        # profiled session of its own after the timed loop.
        events = profile_nodes(gate.artifact.path, measured["feeds"], threads=bench_threads,
                               graph_optimization=gate.bench_ort_runner.graph_optimization)
        nodes = roofline_from_profile(events, peak_flops=gate.sgemm_peak, bandwidth=gate.bandwidth,
                                      cache_bytes=last_level_cache_bytes())
        extra["node_roofline"] = nodes.to_dict(median_s=percentile(sorted(times), 50))
    record = LatencyRecord.from_times(
        bench_backend, "cpu", bench_batch, times,
        flops=gate.flops_per_call(bench_batch), peak_flops=gate.sgemm_peak,
        bytes_moved=gate.bytes_per_call(bench_batch, None if bench_backend == "pytorch" else gate.artifact.path),
        bandwidth=gate.bandwidth, extra=extra,
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
