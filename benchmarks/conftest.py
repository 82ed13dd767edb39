"""Shared set-up of the latency benchmarks: threads, rounds, and the recorded results."""

from __future__ import annotations

import pytest

from harness.bench.measure import rounds_for, time_calls


@pytest.fixture(scope="session")
def bench_threads(gate) -> int:
    """One thread count for both frameworks, recorded in the report."""
    import torch

    threads = gate.bench_threads
    torch.set_num_threads(threads)
    return threads


def run_benchmark(benchmark, gate, function, *, group: str) -> list[float]:
    """Warm up, size the rounds to the time budget, and measure with pytest-benchmark."""
    plan = gate.bench_plan
    warmup_times = time_calls(function, plan.warmup_rounds)
    rounds = rounds_for(min(warmup_times), budget_s=plan.budget_s, min_rounds=plan.min_rounds, max_rounds=plan.max_rounds)
    benchmark.group = group
    # Warm-up already ran above: the first calls allocate arenas and pick kernels.
    benchmark.pedantic(function, rounds=rounds, iterations=1, warmup_rounds=0)
    if benchmark.stats is None:  # --benchmark-disable: the function ran once, nothing was timed
        pytest.skip("benchmarks are disabled (--benchmark-disable): no latency measured")
    return list(benchmark.stats.stats.data)


def record_times(benchmark, times: list[float], *, group: str) -> None:
    """Hand call times measured outside pytest-benchmark (an interleaved loop) to the ``benchmark``
    fixture as its rounds, so its JSON, tables and --benchmark-compare show them like any other.
    pytest-benchmark has no public call for this; it is what its pedantic mode does with each
    round's duration (5.1 to 5.3), and the fixture stays usable once, as pedantic leaves it."""
    benchmark.group = group
    benchmark._mode = "pedantic(...)"
    stats = benchmark._make_stats(1)
    for seconds in times:
        stats.update(seconds)
