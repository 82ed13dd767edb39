"""Benchmark reports: the latency table and chart of one run, its history, and run comparisons.

Comparisons judge speedup ratios (PyTorch median / ONNX Runtime median, same run, same machine),
not absolute times: absolute times differ from machine to machine and from load to load, a ratio
measured within one run mostly does not.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from harness.bench import (
    DESIGN_CLAIMS, BudgetResult, LatencyRecord, best_against_best, gpu_speedups, machine_info, speedups,
)
from harness.errors import GateError

if TYPE_CHECKING:
    from harness.session import GateSession

HISTORY_DIR = "history"


def gate_bench_section(gate: GateSession) -> dict[str, Any]:
    records = sorted(gate.latency, key=lambda r: (r.device, r.batch, r.backend))
    return {
        "run_id": gate.run_id,
        "records": [r.to_dict() for r in records],
        "speedups": {device: {str(b): v for b, v in speedups(records, device).items()} for device in ("cpu", "cuda")},
        "threads": gate.bench_threads,
        "ort_graph_optimization": gate.bench_ort_runner.graph_optimization if gate.latency else None,
        "sgemm_peak_gflops": gate.sgemm_peak / 1e9,
        "read_bandwidth_gbs": gate.bandwidth / 1e9 if "bandwidth" in gate.__dict__ else None,
        "flops_per_call": {str(b): f for b, f in sorted(gate._flops.items())},
        "budget": str(gate.budget_result) if gate.budget_result is not None else None,
        "budget_lines": gate.budget_result.lines() if gate.budget_result is not None else [],
        "gpu_parity": str(gate.gpu_parity).splitlines()[0] if gate.gpu_parity is not None else None,
        "gpu": gpu_section(records, unavailable=gate.gpu_unavailable, budget=gate.gpu_budget_result,
                           budget_set=gate.config.budget.has_gpu_limits),
        "machine": machine_info(),
        "plan": gate.bench_plan.__dict__,
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
    short = {"pytorch": "eager", "pytorch-cuda-graph": "graph"}
    cells = [f"{s['ratio']:.2f}x {short.get(s['baseline'], s['baseline'])}" for s in gpu.get("speedups", [])
             if s["runner"] == record["backend"] and s["batch"] == record["batch"]]
    return ", ".join(cells)


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
        speedup = ratios.get(r["device"], {}).get(str(r["batch"])) if r["backend"] == "onnxruntime" else None
        speedup_cell = _speedup_cell(r, speedup, gpu)
        claim = DESIGN_CLAIMS.get((r["backend"], r["device"]), "") if r["batch"] == 1 else ""
        if speedup is not None and r["batch"] == 1 and r["device"] == "cpu":
            claim += f" (speedup claim {DESIGN_CLAIMS[('speedup', 'cpu')]})"
        lines.append(
            f"| {r['device']} | {r['backend']} | {r['batch']} | {r['median_ms']:.2f} | {r['p95_ms']:.2f} | "
            f"{r['min'] * 1e3:.2f} | {r['throughput_per_s']:.0f} | {speedup_cell} | "
            f"{roofline_cell(r)} | {flop_efficiency_cell(r)} | {claim} |"
        )
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
    from harness.plots import saved_figure

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


# --- comparing runs ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RunBench:
    run_id: str
    path: Path
    medians: dict[str, float]  # key -> seconds
    speedups: dict[str, float]  # "cpu/batch1" -> ratio


def load_run(path: Path) -> RunBench:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        section = document["onnx_gate"]
        medians = {r["key"]: float(r["median"]) for r in section["records"]}
        ratios = {f"{device}/batch{b}": float(v) for device, per in section["speedups"].items() for b, v in per.items()}
        return RunBench(section.get("run_id", path.stem), path, medians, ratios)
    except FileNotFoundError:
        raise GateError(f"benchmark file {str(path)!r} does not exist") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise GateError(f"{str(path)!r} is not an onnx-gate benchmark.json ({type(exc).__name__}: {exc})") from None


def history(report_dir: Path) -> list[Path]:
    return sorted((report_dir / HISTORY_DIR).glob("*.json"))


def resolve_run(report_dir: Path, name: str) -> Path:
    """A run by path, by run id, or by a unique prefix of one."""
    as_path = Path(name)
    if as_path.is_file():
        return as_path
    if (as_path / "benchmark.json").is_file():
        return as_path / "benchmark.json"
    matches = [p for p in history(report_dir) if p.stem.startswith(name)]
    if len(matches) != 1:
        known = ", ".join(p.stem for p in history(report_dir)[-5:]) or "none"
        found = "no run" if not matches else f"{len(matches)} runs"
        raise GateError(f"{found} in {report_dir / HISTORY_DIR} match {name!r}; latest runs: {known}")
    return matches[0]


@dataclass(frozen=True)
class Comparison:
    base: RunBench
    head: RunBench
    max_ratio_regression: float

    @property
    def rows(self) -> list[tuple[str, float | None, float | None]]:
        rows = []
        for key in sorted(set(self.base.medians) | set(self.head.medians)):
            a, b = self.base.medians.get(key), self.head.medians.get(key)
            rows.append((key, a, b))
        return rows

    @property
    def ratio_changes(self) -> dict[str, tuple[float, float, float]]:
        """key -> (base ratio, head ratio, relative change)."""
        return {
            key: (self.base.speedups[key], self.head.speedups[key], self.head.speedups[key] / self.base.speedups[key] - 1)
            for key in sorted(set(self.base.speedups) & set(self.head.speedups))
        }

    @property
    def regressions(self) -> list[str]:
        return [
            f"speedup {key} fell {-change:.1%} ({before:.2f}x -> {after:.2f}x), more than the allowed {self.max_ratio_regression:.0%}"
            for key, (before, after, change) in self.ratio_changes.items()
            if change < -self.max_ratio_regression
        ]

    def lines(self) -> list[str]:
        out = [f"compare {self.base.run_id} (base) -> {self.head.run_id} (head)"]
        for key, a, b in self.rows:
            if a is None or b is None:
                out.append(f"  {key}: only in {'head' if a is None else 'base'}")
            else:
                out.append(f"  {key}: median {a * 1e3:.2f} -> {b * 1e3:.2f} ms ({b / a - 1:+.1%})")
        for key, (before, after, change) in self.ratio_changes.items():
            out.append(f"  speedup {key}: {before:.2f}x -> {after:.2f}x ({change:+.1%})")
        problems = self.regressions
        out.append(("REGRESSED | " + "; ".join(problems)) if problems else "OK | no speedup ratio regressed more than "
                   f"{self.max_ratio_regression:.0%}")
        return out

    def markdown(self) -> str:
        lines = [f"# Benchmark comparison: {self.base.run_id} -> {self.head.run_id}", "",
                 "| benchmark | base median ms | head median ms | change |", "| --- | --- | --- | --- |"]
        for key, a, b in self.rows:
            change = "" if a is None or b is None else f"{b / a - 1:+.1%}"
            fmt = lambda v: "-" if v is None else f"{v * 1e3:.2f}"  # noqa: E731
            lines.append(f"| {key} | {fmt(a)} | {fmt(b)} | {change} |")
        lines += ["", "| speedup (PyTorch / ORT) | base | head | change |", "| --- | --- | --- | --- |"]
        for key, (before, after, change) in self.ratio_changes.items():
            lines.append(f"| {key} | {before:.2f}x | {after:.2f}x | {change:+.1%} |")
        lines += ["", self.lines()[-1], "", "![trend](trend.png)"]
        return "\n".join(lines) + "\n"


def plot_trend(runs: Sequence[RunBench], path: Path) -> Path | None:
    """Speedup ratio per (device, batch) over the history, oldest to newest."""
    if not runs:
        return None
    from harness.plots import saved_figure

    keys = sorted({key for run in runs for key in run.speedups})
    with saved_figure(path, figsize=(max(6, len(runs) * 0.8), 4)) as (_, axis):
        for key in keys:
            xs = [i for i, run in enumerate(runs) if key in run.speedups]
            axis.plot(xs, [runs[i].speedups[key] for i in xs], marker="o", label=key)
        axis.set_xticks(range(len(runs)), [run.run_id[:15] for run in runs], rotation=45, ha="right")
        axis.set_ylabel("speedup, PyTorch median / ORT median")
        axis.set_title("ONNX Runtime speedup over runs")
        axis.legend()
    return path


def compare_runs(report_dir: Path, base: str | None, head: str | None, max_ratio_regression: float) -> tuple[Comparison, Path]:
    """Compare two runs (default: the previous and the latest) and write the comparison report."""
    runs = history(report_dir)
    needed = (head is None) + (base is None)
    if len(runs) < needed:
        raise GateError(f"need {needed} benchmark run(s) in {report_dir / HISTORY_DIR} to compare, found {len(runs)}; "
                        "run `onnx-gate run` again or name two benchmark.json files")
    head_path = resolve_run(report_dir, head) if head else runs[-1]
    base_path = resolve_run(report_dir, base) if base else runs[-2 if head is None else -1]
    comparison = Comparison(load_run(base_path), load_run(head_path), max_ratio_regression)
    out_dir = report_dir / "compare" / f"{comparison.base.run_id}__{comparison.head.run_id}"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "compare.md").write_text(comparison.markdown(), encoding="utf-8")
    loaded = []
    for path in runs:
        try:
            loaded.append(load_run(path))
        except GateError:
            continue  # an unreadable old file must not hide the trend of the rest
    plot_trend(loaded, out_dir / "trend.png")
    return comparison, out_dir
