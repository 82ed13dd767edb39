"""Candidates side by side: PyTorch eager, the plain export and every built candidate, measured
interleaved in one loop (harness/bench/interleave.py), so that load from other processes falls on
all of them alike and their ratios hold within the run."""

from __future__ import annotations

import pytest

from harness.bench.interleave import BLOCK, measure_interleaved
from harness.bench.load import LoadSnapshot, load_between
from harness.bench.measure import LatencyRecord, onnx_weight_bytes, rounds_for, time_calls
from harness.runtime.runners import NO_SPINNING
from harness.candidates.session import PLAIN
from harness.runtime.export import example_feeds


@pytest.mark.gate_check("latency_candidates")
def test_candidates_side_by_side(gate, bench_threads, bench_batch):
    if not gate.config.candidates.enabled:
        pytest.skip("no [candidates] in the config")
    sizes = gate.sizes_at(bench_batch)
    feeds = example_feeds(gate.config, sizes, seed=bench_batch)
    torch_runner = gate.torch_runner
    tensors = torch_runner.to_tensors(feeds)
    functions = {"pytorch": lambda: torch_runner.forward(tensors)}
    # ONNX Runtime's threads spin after each call by default; interleaved with PyTorch they would
    # take the cores PyTorch's next call needs. Every ORT session here runs without spinning.
    entries = dict(NO_SPINNING)
    paths = {PLAIN: gate.artifact.path}
    sessions = {PLAIN: gate.new_ort_runner(threads=bench_threads, config_entries=entries).session}
    for name, candidate in gate.candidates.built.items():
        if candidate.built:
            paths[name] = candidate.path
            sessions[name] = gate.candidates.new_runner(name, threads=bench_threads, config_entries=entries).session
    for name, session in sessions.items():
        functions[name] = lambda session=session: session.run(None, feeds)
    plan = gate.bench_plan
    warmup = {name: min(time_calls(function, plan.warmup_rounds)) for name, function in functions.items()}
    rounds = rounds_for((BLOCK + 1) * sum(warmup.values()), budget_s=plan.budget_s * len(functions) / 2,
                        min_rounds=-(-plan.min_rounds // BLOCK), max_rounds=plan.max_rounds)
    before = LoadSnapshot.now()
    times = measure_interleaved(functions, rounds)
    load = load_between(before, LoadSnapshot.now())
    flops = gate.flops_per_call(bench_batch)
    for name, measured in times.items():
        path = paths.get(name)
        record = LatencyRecord.from_times(
            f"candidate:{name}", "cpu", bench_batch, measured, flops=flops, peak_flops=gate.sgemm_peak,
            bytes_moved=gate.bytes_per_call(bench_batch, path), bandwidth=gate.bandwidth,
            extra={"candidate": name, "threads": bench_threads, "interleaved_with": sorted(functions), "block": BLOCK,
                   "load": load,
                   "weight_bytes": onnx_weight_bytes(path) if path is not None else None},
        )  # fmt: skip
        gate.candidates.latency = [r for r in gate.candidates.latency if r.key != record.key] + [record]
    assert all(len(measured) == rounds * BLOCK >= plan.min_rounds for measured in times.values())
