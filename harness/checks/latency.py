"""The benchmark checks (benchmarks/, measured by harness/bench/measure.py): CPU latency and its budgets,
the production baseline, and the GPU latency where CUDA is (GPU parity: harness/checks/gpu_parity.py).

A model with a growing cache also gets its prefill and per-token decode latency (latency_decode).
The CPU latency and its budgets are required when the session runs the benchmarks, and always for
a release: a model whose latency nobody measured does not ship. The GPU checks run, and may fail,
only where CUDA is; they are never required, since CI machines have no GPU.
"""

from __future__ import annotations

from typing import Any

from harness.checks.declared import declare_check, never, with_baseline, with_benchmarks


def with_a_growing_cache(gate: Any) -> bool:
    """The session runs the benchmarks and the model's state grows (a KV cache): its per-token
    latency is measured too (harness/bench/decode.py)."""
    return with_benchmarks(gate) and any(pair.grows for pair in gate.config.rollout.states)


LATENCY_CPU = declare_check("latency_cpu", required=with_benchmarks, for_release=True, listed=False, order=90)
LATENCY_BUDGET = declare_check("latency_budget", required=with_benchmarks, for_release=True, listed=False, order=91)
LATENCY_DECODE = declare_check("latency_decode", required=with_a_growing_cache, listed=False, order=92)
BASELINE = declare_check("baseline", required=with_baseline, listed=False, order=95)
LATENCY_GPU = declare_check("latency_gpu", required=never, listed=False, order=97)
LATENCY_GPU_BUDGET = declare_check("latency_gpu_budget", required=never, listed=False, order=98)

BENCH_CHECKS = (LATENCY_CPU.name, LATENCY_BUDGET.name)
