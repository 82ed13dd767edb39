"""Per-token latency of a model with a growing cache (harness/bench/decode.py): the prefill call and
one token per call with the cache fed back, at each context length the config allows, PyTorch
eager against ONNX Runtime with IOBinding, in alternating rounds."""

from __future__ import annotations

import pytest

from benchmarks.conftest import record_times
from harness.bench.decode import decode_plans, ort_decoder, start_feeds, tokens_per_second, torch_decoder
from harness.bench.interleave import measure_interleaved
from harness.bench.load import LoadSnapshot, load_between
from harness.bench.measure import LatencyRecord, percentile, rounds_for, time_calls

PHASES = ("prefill", "decode")


@pytest.fixture(scope="session")
def decode_measurements() -> dict[int, dict[str, object]]:
    return {}


def _measure(gate, plan) -> dict[str, object]:
    """Both phases of both backends at ``plan``'s context, in alternating rounds."""
    runner, session = gate.torch_runner, gate.bench_ort_runner.session
    prefill = start_feeds(gate.config, plan, prefill=True, batch_dim=gate.batch_dim)
    decode = start_feeds(gate.config, plan, prefill=False, batch_dim=gate.batch_dim)
    functions = {
        ("prefill", "pytorch"): torch_decoder(runner, gate.config, prefill, 1),
        ("prefill", "onnxruntime"): ort_decoder(session, gate.config, prefill, 1),
        ("decode", "pytorch"): torch_decoder(runner, gate.config, decode, plan.tokens),
        ("decode", "onnxruntime"): ort_decoder(session, gate.config, decode, plan.tokens),
    }
    measured: dict[str, object] = {}
    budget = gate.bench_plan
    for phase in PHASES:
        pair = {backend: f for (p, backend), f in functions.items() if p == phase}
        warmup = sum(min(time_calls(f, budget.warmup_rounds)) for f in pair.values())
        rounds = rounds_for(2 * warmup, budget_s=budget.budget_s, min_rounds=-(-budget.min_rounds // 2), max_rounds=-(-budget.max_rounds // 2))
        before = LoadSnapshot.now()
        times = measure_interleaved(pair, rounds, block=2)
        per = plan.tokens if phase == "decode" else 1
        measured[phase] = {"times": {b: [t / per for t in ts] for b, ts in times.items()}, "load": load_between(before, LoadSnapshot.now())}
    return measured


@pytest.mark.gate_check("latency_decode")
@pytest.mark.parametrize("phase", PHASES)
def test_per_token_latency(benchmark, gate, bench_threads, bench_backend, decode_plan, phase, decode_measurements):
    if decode_plan is None:
        pytest.skip(decode_plans(gate.config, gate.batch_dim)[1] or "no [[state]] with a growing cache")
    if benchmark.disabled:
        pytest.skip("benchmarks are disabled (--benchmark-disable): no latency measured")
    if decode_plan.context not in decode_measurements:
        decode_measurements[decode_plan.context] = _measure(gate, decode_plan)
    measured = decode_measurements[decode_plan.context][phase]
    times = measured["times"][bench_backend]
    record_times(benchmark, times, group=f"{phase} context {decode_plan.context}" + (" (per token)" if phase == "decode" else ""))
    median = percentile(sorted(times), 50)
    extra = {"threads": bench_threads, "context": decode_plan.context, "prompt": decode_plan.prompt if phase == "prefill" else None,
             "tokens": decode_plan.tokens if phase == "decode" else None, "load": measured["load"],
             "tokens_per_second": tokens_per_second(decode_plan.batch, median) if phase == "decode" else None,
             "io_binding": bench_backend == "onnxruntime"}  # fmt: skip
    record = LatencyRecord.from_times(bench_backend, "cpu", decode_plan.batch, times, extra=extra, phase=f"{phase}@{decode_plan.context}")
    gate.decode_latency = [r for r in gate.decode_latency if r.key != record.key] + [record]
    note = decode_plans(gate.config, gate.batch_dim)[1]
    if note:
        gate.record("latency_decode_note", note)
    benchmark.extra_info.update(record.to_dict(samples=False))
    assert record.min > 0 and record.rounds >= 2
