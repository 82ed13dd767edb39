"""The candidate against production (--gate-baseline): latency with rounds alternating in this session,
and output drift. Runs after the CPU latency tests (file order), on the same threads and inputs."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pytest

from harness.bench.baseline import alternate, merge_drift, slowdown_budget
from harness.publish.baseline_source import fetch
from harness.bench.measure import rounds_for
from harness.bench.stats import latency_effect
from harness.runtime.export import example_feeds
from harness.runtime.runners import OrtRunner
from harness.core.strategies import FAMILIES, InputCase, describe_case

DRIFT_SEEDS = (0, 1, 2)


@pytest.mark.gate_check("baseline")
def test_the_candidate_against_the_production_baseline(gate, bench_threads, onnx_artifact):
    spec = gate.baseline_spec
    if spec is None:
        pytest.skip("no --gate-baseline given: nothing to compare the candidate with")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="onnx-gate-baseline-") as scratch:
        fetched = fetch(spec, Path(scratch))
        if fetched.path is None:  # a first release: stated, not an error
            gate.record("baseline", {"spec": spec.text, "missing": fetched.missing,
                                     "seconds": time.perf_counter() - started})
            return
        names = ([s.name for s in gate.config.inputs], list(gate.config.outputs))
        production = OrtRunner(fetched.path, *names, threads=bench_threads)  # holds the model in memory
    candidate = gate.bench_ort_runner
    section = {"spec": spec.text, "baseline": fetched.described, "threads": bench_threads, "latency": [],
               "confidence": f"{1 - gate.config.bench.significance:.0%}"}
    budget = gate.config.budget.max_slowdown_vs_baseline
    for batch in gate.config.bench.batches if gate.batch_dim else [None]:
        sizes = gate.sizes_at(batch)
        feeds = example_feeds(gate.config, sizes, seed=batch or 0)
        run_candidate = lambda: candidate.session.run(None, feeds)  # noqa: E731
        run_production = lambda: production.session.run(None, feeds)  # noqa: E731
        plan = gate.bench_plan
        warm = alternate(run_candidate, run_production, plan.warmup_rounds)
        rounds = rounds_for(min(warm[0]) + min(warm[1]), budget_s=plan.budget_s, min_rounds=plan.min_rounds,
                            max_rounds=plan.max_rounds)
        cand_times, prod_times = alternate(run_candidate, run_production, rounds)
        effect = latency_effect(f"batch {batch}", prod_times, cand_times, floor=budget or 0.0,
                                significance=gate.config.bench.significance)
        section["latency"].append({
            "batch": batch, "rounds": rounds, "candidate_ms": effect.head * 1e3, "production_ms": effect.base * 1e3,
            "ratio": 1 + effect.change, "ratio_low": 1 + effect.low, "ratio_high": 1 + effect.high,
        })  # fmt: skip
    cases = [InputCase(FAMILIES[0], gate.sizes_at(b), seed)
             for b in (gate.pinned_batches() or [None]) for seed in DRIFT_SEEDS]
    section["drift"] = merge_drift([
        _drift(gate.config, candidate, production, case.materialize(gate.config)) for case in cases
    ])  # fmt: skip
    section["drift_inputs"] = f"{len(cases)} inputs ({', '.join(describe_case(c) for c in cases[:2])}, ...)"
    verdict = slowdown_budget(section["latency"], budget)
    if verdict is not None:
        section["budget"] = verdict
    section["seconds"] = time.perf_counter() - started
    gate.record("baseline", section)
    assert verdict is None or verdict.startswith("PASSED"), verdict


def _drift(config, candidate, production, feeds):
    from harness.bench.baseline import drift
    from harness.checks.parity import keep_valid_positions

    # Padded positions of padded_outputs mean nothing in either model.
    (ours, theirs), _, _ = keep_valid_positions(config, feeds, candidate.infer(feeds), production.infer(feeds))
    return drift(ours, theirs)
