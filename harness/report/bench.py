"""Benchmark reports: the latency table and chart of one run, its history, and run comparisons.

Comparing runs is harness/bench/compare.py; each record keeps its per-round samples for it.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from harness.bench.compare import HISTORY_DIR
from harness.bench.measure import (
    BudgetResult,
    LatencyRecord,
    best_against_best,
    gpu_speedups,
    machine_info,
    speedups,
)
from harness.compare.rule import ParityResult
from harness.core.errors import first_line
from harness.core.plots import saved_figure
from harness.core.runner_kinds import ONNXRUNTIME, SPEEDUP_CLAIM_CPU, kind_of
from harness.gate.session import NotRun
from harness.runtime.runners import DEFAULT_GRAPH_OPTIMIZATION

if TYPE_CHECKING:
    from harness.gate.session import GateSession



def gate_bench_section(gate: GateSession, *, samples: bool = True) -> dict[str, Any]:
    """benchmark.json's "onnx_gate" section; gate.json's "benchmarks" leaves the samples out."""
    records = sorted(gate.latency, key=lambda r: (r.device, r.batch, r.backend))
    gpu_parity = gate.recorded("gpu_parity")
    return {
        "run_id": gate.run_id,
        "records": [r.to_dict(samples=samples) for r in records],
        "speedups": {device: {str(b): v for b, v in speedups(records, device).items()} for device in ("cpu", "cuda")},
        "threads": gate.bench_threads,
        # The gate's runners all use the default: asking a runner could load an ONNX Runtime session again.
        "ort_graph_optimization": DEFAULT_GRAPH_OPTIMIZATION if records else None,
        "sgemm_peak_gflops": gate.sgemm_peak / 1e9,
        "read_bandwidth_gbs": bandwidth / 1e9 if (bandwidth := gate.measured_bandwidth()) is not None else None,
        "flops_per_call": {str(b): f for b, f in gate.measured_flops().items()},
        "budget": str(budget) if (budget := gate.recorded("latency_budget")) is not None else None,
        "budget_lines": budget.lines() if budget is not None else [],
        "gpu_parity": first_line(gpu_parity) if isinstance(gpu_parity, ParityResult) else None,
        "gpu": gpu_section(records, unavailable=gpu_parity.reason if isinstance(gpu_parity, NotRun) else None,
                           budget=gate.recorded("latency_gpu_budget"), budget_set=gate.config.budget.has_gpu_limits),
        "machine": machine_info(),
        "plan": gate.bench_plan.__dict__,
        "decode_records": [r.to_dict(samples=samples) for r in sorted(gate.decode_latency, key=lambda r: (r.phase, r.backend))],
        "decode_speedups": decode_speedups(gate.decode_latency),
        "decode_note": gate.recorded("latency_decode_note"),
    }


def gpu_section(records: Sequence[LatencyRecord], *, unavailable: str | None, budget: BudgetResult | None,
                budget_set: bool) -> dict[str, Any]:
    """What the GPU run showed: each ONNX Runtime GPU runner against each PyTorch GPU baseline,
    the matmul peak the efficiency column divides by, the GPU budgets; or why nothing ran."""
    peaks = {r.peak_flops for r in records if r.device == "cuda" and r.peak_flops}
    return {
        "unavailable": unavailable,
        "matmul_peak_tflops": max(peaks) / 1e12 if peaks else None,
        "speedups": [s.to_dict() for s in gpu_speedups(records)],
        "best_against_best": [s.to_dict() for s in best_against_best(records)],
        "budget": str(budget) if budget is not None else None,
        "budget_lines": budget.lines() if budget is not None else [],
        "budget_set": budget_set,
    }


def gpu_markdown(gpu: dict[str, Any]) -> list[str]:
    """The GPU paragraph of summary.md: ratios in words, ONNX Runtime's losses said plainly."""
    if gpu.get("unavailable"):
        lines = [f"GPU: not measured: {gpu['unavailable']}."]
        if gpu.get("budget_set"):
            lines[0] += " The GPU budgets set in config were not judged."
        return lines
    if not gpu.get("speedups"):
        return []
    lines = ["GPU, ONNX Runtime against the PyTorch paths a GPU user would pick instead (median / median, "
             "same inputs, TF32 off in both frameworks):", ""]
    lines += [f"- {s['sentence']}" for s in gpu["speedups"]]
    lines += ["", "Best against best, per batch: the fastest ONNX Runtime GPU runner against the fastest PyTorch "
              "GPU path; where it says slower, shipping ONNX costs a GPU user latency.", ""]
    lines += [f"- {s['sentence']}" for s in gpu.get("best_against_best", [])]
    if gpu.get("budget_lines"):
        lines += ["", "GPU budgets (every GPU limit is set in config: GPU ratios depend on the GPU):", ""]
        lines += [f"- {line}" for line in gpu["budget_lines"]]
    return lines


def _percent(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.0%}"


def roofline_intro(section: dict[str, Any]) -> list[str]:
    """How the efficiency columns are computed, with the limits this run measured."""
    bandwidth = section.get("read_bandwidth_gbs")
    measured = f" (read bandwidth measured now: {bandwidth:.1f} GB/s)" if bandwidth else " (bandwidth not measured)"
    lines = [
        "Roofline efficiency: the least time the call can take, max(FLOPs / sgemm peak, bytes / read bandwidth), "
        f"over the median{measured}; bytes are the weights as stored plus the activations larger than the "
        "last-level cache; the bound says which limit applies. FLOP efficiency (FLOPs per second over the peak) "
        "is shown only where compute bounds the call: where memory does, it would misread the run.",
    ]
    beyond = [r for r in section["records"] if r.get("bound") == "memory" and (r.get("roofline_efficiency") or 0) > 1]
    if beyond:
        lines[0] += (" Memory-bound rows above 100% read their weights from cache, faster than the DRAM bandwidth "
                     "measured here: for them the memory limit is conservative.")
    return lines


def roofline_cell(record: dict[str, Any]) -> str:
    bound = record.get("bound")
    if not bound:
        return "not measured"
    return f"{_percent(record.get('roofline_efficiency'))} ({bound}-bound)"


def flop_efficiency_cell(record: dict[str, Any]) -> str:
    bound = record.get("bound")
    if bound == "memory":
        return "n/a (memory-bound)"
    return _percent(record.get("efficiency"))


def _speedup_cell(record: dict[str, Any], cpu_ratio: float | None, gpu: dict[str, Any]) -> str:
    if record["device"] != "cuda":
        return "" if cpu_ratio is None else f"{cpu_ratio:.2f}x"
    cells = [f"{s['ratio']:.2f}x {_short(s['baseline'])}" for s in gpu.get("speedups", [])
             if s["runner"] == record["backend"] and s["batch"] == record["batch"]]
    return ", ".join(cells)


def _short(baseline: str) -> str:
    kind = kind_of(baseline, "cuda")
    return kind.short if kind is not None and kind.short else baseline


def archive_benchmark_json(gate: GateSession) -> Path | None:
    """Copy this run's benchmark.json into reports/history/<run-id>.json."""
    source = gate.report_dir / "benchmark.json"
    if not source.is_file():
        return None
    history = gate.config.report_dir / HISTORY_DIR
    history.mkdir(parents=True, exist_ok=True)
    target = history / f"{gate.run_id}.json"
    shutil.copyfile(source, target)
    return target


def node_roofline_markdown(records: Sequence[dict[str, Any]]) -> list[str]:
    """Per batch size: ONNX Runtime against the limit of a sequential executor (the sum of each
    node's own bound, harness/bench/nodes.py) beside the whole-model bound, and the five nodes
    that lose the most time against their own bound."""
    lines: list[str] = []
    for r in records:
        nodes = (r.get("extra") or {}).get("node_roofline")
        if not nodes:
            continue
        whole = f"{_percent(r.get('roofline_efficiency'))} against the whole-model bound ({r['roofline_ms']:.2f} ms)" \
            if r.get("roofline_ms") else "whole-model bound not measured"
        lines += [
            "", f"Per-node roofline, {r['device']} {r['backend']} batch {r['batch']}: the nodes' own bounds sum to "
            f"{nodes['bound_ms']:.2f} ms ({nodes['compute_bound_ms']:.2f} ms compute-bound, "
            f"{nodes['memory_bound_ms']:.2f} ms memory-bound, {nodes['nodes']} nodes); the median "
            f"{r['median_ms']:.2f} ms is {_percent(nodes['efficiency'])} of that limit, {whole}. "
            f"Furthest from their bound ({nodes['profiled_calls']} profiled calls):", "",
        ]  # fmt: skip
        lines += [f"- {n['op']} `{n['node']}`: {n['ms']:.3f} ms against {n['bound_ms']:.3f} ms ({n['bound']}-bound), "
                  f"{n['achieved']}" for n in nodes["furthest"]]
    return lines


def decode_speedups(records: Sequence[LatencyRecord]) -> dict[str, float]:
    """PyTorch's median over ONNX Runtime's, per device, batch and phase ("cpu/batch1/decode@512"),
    both measured in the same alternating rounds: what `onnx-gate compare` judges as a ratio."""
    by = {(r.device, r.batch, r.phase, r.backend): r.median for r in records}
    return {
        f"{device}/batch{batch}/{phase}": by[(device, batch, phase, "pytorch")] / median
        for (device, batch, phase, backend), median in by.items()
        if backend == ONNXRUNTIME and (device, batch, phase, "pytorch") in by and median > 0
    }


def decode_markdown(records: Sequence[dict[str, Any]], note: str | None) -> list[str]:
    """Per-token latency of a stateful model: prefill, then decoding with the cache fed back."""
    if not records:
        return []
    by = {(r["phase"], r["backend"]): r for r in records}
    contexts = sorted({int(r["phase"].split("@")[1]) for r in records})
    lines = ["", "Per-token latency (the cache fed back; ONNX Runtime through IOBinding; both backends in "
             "alternating rounds):", "",
             "| context | prefill ms PyTorch | prefill ms ONNX Runtime | ms/token PyTorch | ms/token ONNX Runtime "
             "| tokens/s PyTorch | tokens/s ONNX Runtime | decode speedup |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip

    def cell(phase: str, backend: str, what: str) -> str:
        record = by.get((f"{phase}@{context}", backend))
        if record is None:
            return "not measured"
        return f"{record['median_ms']:.2f}" if what == "ms" else f"{record['throughput_per_s']:.0f}"

    for context in contexts:
        torch_decode, ort_decode = by.get((f"decode@{context}", "pytorch")), by.get((f"decode@{context}", ONNXRUNTIME))
        speedup = f"{torch_decode['median'] / ort_decode['median']:.2f}x" if torch_decode and ort_decode else "not measured"
        lines.append(
            f"| {context} | {cell('prefill', 'pytorch', 'ms')} | {cell('prefill', ONNXRUNTIME, 'ms')} | "
            f"{cell('decode', 'pytorch', 'ms')} | {cell('decode', ONNXRUNTIME, 'ms')} | {cell('decode', 'pytorch', 'rate')} | "
            f"{cell('decode', ONNXRUNTIME, 'rate')} | {speedup} |"
        )
    prompts = sorted({r["extra"].get("prompt") for r in records if r["phase"].startswith("prefill")} - {None})
    if prompts:
        lines += ["", f"Prefill: a prompt of {', '.join(map(str, prompts))} tokens onto an empty cache."]
    if note:
        lines += ["", f"{note}."]
    return lines


def latency_markdown(section: dict[str, Any]) -> str:
    records = section["records"]
    ratios = section["speedups"]
    gpu = section.get("gpu") or {}
    lines = [
        "## Latency", "",
        f"Threads: {section['threads']} (both frameworks); ONNX Runtime graph optimisation: "
        f"{section['ort_graph_optimization']}; sgemm peak measured now: {section['sgemm_peak_gflops']:.1f} GFLOP/s; "
        f"machine: {section['machine']['cpu']} ({section['machine']['cores_available']} cores"
        + (f", GPU {section['machine']['gpu']}" if section["machine"].get("gpu") else "") + ")"
        + (f"; GPU fp32 matmul peak (TF32 off) measured now: {gpu['matmul_peak_tflops']:.1f} TFLOP/s"
           if gpu.get("matmul_peak_tflops") else "") + ".", "",
        *roofline_intro(section), "",
        "| device | backend | batch | median ms | p95 ms | min ms | samples/s | speedup vs PyTorch | roofline efficiency | FLOP efficiency | original claim |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]  # fmt: skip
    for r in records:
        speedup = ratios.get(r["device"], {}).get(str(r["batch"])) if r["backend"] == ONNXRUNTIME else None
        speedup_cell = _speedup_cell(r, speedup, gpu)
        kind = kind_of(r["backend"], r["device"])
        claim = kind.design_claim if kind is not None and r["batch"] == 1 else ""
        if speedup is not None and r["batch"] == 1 and r["device"] == "cpu":
            claim += f" (speedup claim {SPEEDUP_CLAIM_CPU})"
        lines.append(
            f"| {r['device']} | {r['backend']} | {r['batch']} | {r['median_ms']:.2f} | {r['p95_ms']:.2f} | "
            f"{r['min'] * 1e3:.2f} | {r['throughput_per_s']:.0f} | {speedup_cell} | "
            f"{roofline_cell(r)} | {flop_efficiency_cell(r)} | {claim} |"
        )
    lines += node_roofline_markdown(records)
    lines += decode_markdown(section.get("decode_records") or [], section.get("decode_note"))
    if section.get("budget_lines"):
        lines += ["", "Budgets (built-in defaults only catch broken exports and hold on common machines; "
                  "limits set in config are the project's choice and depend on its hardware):", ""]
        lines += [f"- {line}" for line in section["budget_lines"]]
    elif section.get("budget"):
        lines += ["", f"Budgets: {section['budget']}"]
    if section.get("gpu_parity"):
        lines += ["", f"GPU parity: {section['gpu_parity']}"]
    gpu_lines = gpu_markdown(gpu)
    if gpu_lines:
        lines += [""] + gpu_lines
    lines += ["", "![latency](latency.png)"]
    return "\n".join(lines)


def plot_latency(section: dict[str, Any], path: Path) -> Path | None:
    """Median latency by backend x batch size, whiskers from p5 to p95, one panel per device."""
    records = section["records"]
    if not records:
        return None

    devices = sorted({r["device"] for r in records})
    with saved_figure(path, nrows=1, ncols=len(devices), figsize=(6 * len(devices), 4), squeeze=False) as (_, axes):
        for axis, device in zip(axes[0], devices):
            _plot_device(axis, device, [r for r in records if r["device"] == device])
    return path


def _plot_device(axis: Any, device: str, rows: list[dict[str, Any]]) -> None:
    backends = sorted({r["backend"] for r in rows})
    batches = sorted({r["batch"] for r in rows})
    width = 0.8 / len(backends)
    for index, backend in enumerate(backends):
        mine = {r["batch"]: r for r in rows if r["backend"] == backend}
        xs = [i + index * width for i, b in enumerate(batches) if b in mine]
        medians = [mine[b]["median"] * 1e3 for b in batches if b in mine]
        low = [(mine[b]["median"] - mine[b]["p5"]) * 1e3 for b in batches if b in mine]
        high = [(mine[b]["p95"] - mine[b]["median"]) * 1e3 for b in batches if b in mine]
        axis.bar(xs, medians, width, yerr=[low, high], capsize=3, label=backend)
    axis.set_xticks([i + width * (len(backends) - 1) / 2 for i in range(len(batches))], [str(b) for b in batches])
    axis.set_xlabel("batch size")
    axis.set_ylabel("latency, ms (median, p5-p95)")
    axis.set_yscale("log")
    axis.set_title(f"{device}")
    axis.legend()
