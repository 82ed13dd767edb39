"""Latency measurement helpers: statistics, FLOPs, bytes, the machine's limits, budgets.

Numbers are put next to physical limits, measured on the same machine, in the same session, with
the same threads: an sgemm peak (FLOP/s) and a streaming read bandwidth (bytes/s). The roofline
time of a call is ``max(FLOPs / peak, bytes / bandwidth)``: the least time either limit allows.
Efficiency is that time over the median latency, and the larger term names the bound. At batch 1
a network that reads all its weights once per call is usually memory-bound; efficiency against
the FLOP peak alone would read as "25%" where the call runs close to what memory allows.
"""

from __future__ import annotations

import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from harness.core.runner_kinds import ONNXRUNTIME, PYTORCH, backends, label, runs_onnxruntime
from harness.runtime.runners import output_list

if TYPE_CHECKING:
    from torch import nn

    from harness.core.config import BudgetConfig

def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile of already sorted values, q in [0, 100]."""
    if not sorted_values:
        return math.nan
    position = (len(sorted_values) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


@dataclass(frozen=True)
class LatencyRecord:
    """One benchmark: a backend on a device at a batch size, in seconds per call."""

    backend: str  # "pytorch", "pytorch-cuda-graph", "onnxruntime", "onnxruntime-cudagraph"
    device: str  # "cpu" or "cuda"
    batch: int
    rounds: int
    median: float
    p95: float
    p5: float
    min: float
    mean: float
    flops: float = 0.0  # per call
    peak_flops: float = 0.0  # per second: sgemm on this CPU, or fp32 matmul (TF32 off) on this GPU
    extra: Mapping[str, Any] = field(default_factory=dict)
    # Per-round seconds in measurement order: `onnx-gate compare` judges changes from them.
    samples: tuple[float, ...] = ()
    bytes_moved: float = 0.0  # per call: weights, inputs, outputs, activations too big for the cache
    bandwidth: float = 0.0  # bytes per second: streaming reads on this device, measured in the session
    # A stateful model's per-token benchmarks (harness/bench/decode.py): "prefill@512" (seconds per
    # prefill call) or "decode@512" (seconds per decoded token at a 512-position cache); "" otherwise.
    phase: str = ""

    @classmethod
    def from_times(cls, backend: str, device: str, batch: int, times: Sequence[float], **kwargs: Any) -> LatencyRecord:
        ordered = sorted(times)
        return cls(
            backend, device, batch, len(ordered), percentile(ordered, 50), percentile(ordered, 95),
            percentile(ordered, 5), ordered[0], sum(ordered) / len(ordered), **kwargs, samples=tuple(times),
        )  # fmt: skip

    @property
    def key(self) -> str:
        return f"{self.device}/{self.backend}/batch{self.batch}" + (f"/{self.phase}" if self.phase else "")

    @property
    def throughput(self) -> float:
        return self.batch / self.median

    @property
    def efficiency(self) -> float:
        """FLOP-only efficiency: FLOPs per second over the peak. Meaningful where compute bounds."""
        if not (self.flops and self.peak_flops):
            return math.nan
        return self.flops / self.median / self.peak_flops

    @property
    def roofline(self) -> Roofline | None:
        if not (self.flops and self.peak_flops and self.bytes_moved and self.bandwidth):
            return None
        return Roofline(self.flops, self.peak_flops, self.bytes_moved, self.bandwidth)

    @property
    def roofline_efficiency(self) -> float:
        """The roofline time over the median: 1.0 runs at the limit the machine allows."""
        roofline = self.roofline
        return math.nan if roofline is None else roofline.seconds / self.median

    def to_dict(self, *, samples: bool = True) -> dict[str, Any]:
        fields = asdict(self)
        if not samples:  # benchmark.json keeps them; other documents stay readable
            del fields["samples"]
        roofline = self.roofline
        return {
            **fields, "key": self.key, "throughput_per_s": self.throughput,
            "efficiency": self.efficiency, "median_ms": self.median * 1e3, "p95_ms": self.p95 * 1e3,
            "roofline_efficiency": self.roofline_efficiency,
            "bound": roofline.bound if roofline else None,
            "roofline_ms": roofline.seconds * 1e3 if roofline else None,
        }  # fmt: skip


@dataclass(frozen=True)
class Roofline:
    """The least time one call can take on this machine: its FLOPs at the measured peak, or its
    bytes at the measured bandwidth, whichever is longer."""

    flops: float
    peak_flops: float
    bytes_moved: float
    bandwidth: float

    @property
    def compute_s(self) -> float:
        return self.flops / self.peak_flops

    @property
    def memory_s(self) -> float:
        return self.bytes_moved / self.bandwidth

    @property
    def seconds(self) -> float:
        return max(self.compute_s, self.memory_s)

    @property
    def bound(self) -> str:
        return "memory" if self.memory_s >= self.compute_s else "compute"

    @property
    def intensity(self) -> float:
        """FLOPs per byte; below peak / bandwidth (the ridge point) the call is memory-bound."""
        return self.flops / self.bytes_moved


def rounds_for(seconds_per_call: float, *, budget_s: float, min_rounds: int, max_rounds: int) -> int:
    """As many rounds as fit the time budget, within [min_rounds, max_rounds]."""
    fitting = int(budget_s / max(seconds_per_call, 1e-9))
    return max(min_rounds, min(max_rounds, fitting))


def time_calls(function: Callable[[], Any], rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return times


def sgemm_peak_flops(threads: int, size: int = 1024, repeats: int = 20) -> float:
    """Best fp32 matrix-multiply rate torch reaches on this machine with ``threads`` threads."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(size, size), torch.randn(size, size)
        out = torch.empty(size, size)
        for _ in range(3):
            torch.mm(a, b, out=out)
        best = min(time_calls(lambda: torch.mm(a, b, out=out), repeats))
    finally:
        torch.set_num_threads(previous)
    return 2 * size**3 / best


def read_bandwidth(threads: int, size_bytes: int | None = None, repeats: int = 5) -> float:
    """Best streaming read rate, bytes per second, with ``threads`` threads: a sum over a float32
    buffer much larger than any cache (STREAM's idea, read-only like a forward pass's weights).
    ``size_bytes``: default four times the last-level cache, within [256 MiB, 512 MiB]."""
    import torch

    size_bytes = size_bytes or min(max(256 * 2**20, 4 * last_level_cache_bytes()), 512 * 2**20)

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        buffer = torch.ones(size_bytes // 4)  # written once, so every page is mapped before timing
        for _ in range(2):
            buffer.sum()
        best = min(time_calls(buffer.sum, repeats))
    finally:
        torch.set_num_threads(previous)
    return buffer.numel() * 4 / best


def last_level_cache_bytes(default: int = 32 * 2**20) -> int:
    """The largest CPU cache this machine reports (Linux sysfs), else ``default``."""
    from pathlib import Path

    sizes = []
    for entry in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = entry.read_text(encoding="ascii").strip().upper()
        scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
        digits = text.rstrip("KMG")
        if digits.isdigit():
            sizes.append(int(digits) * scale)
    return max(sizes, default=default)


def onnx_weight_bytes(path: Any) -> int:
    """Bytes of an ONNX file's initializers and constants in their stored types: what one call
    reads once. External data counts by its declared length; nothing is decoded."""
    import onnx
    from onnx import helper

    model = onnx.load(str(path), load_external_data=False)

    def tensor_bytes(tensor: Any) -> int:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            entries = {e.key: e.value for e in tensor.external_data}
            return int(entries.get("length", 0))
        if tensor.raw_data:
            return len(tensor.raw_data)
        count = 1
        for d in tensor.dims:
            count *= d
        itemsize = helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
        return count * itemsize

    total = 0
    graphs = [model.graph]
    while graphs:
        graph = graphs.pop()
        total += sum(tensor_bytes(t) for t in graph.initializer)
        for node in graph.node:
            for attribute in node.attribute:
                if attribute.HasField("t"):
                    total += tensor_bytes(attribute.t)
                if attribute.HasField("g"):
                    graphs.append(attribute.g)
                graphs.extend(attribute.graphs)
    return total


def activation_bytes(model: nn.Module, tensors: Sequence[Any], cache_bytes: int) -> int:
    """Bytes one forward pass must move besides its weights: inputs read and outputs written,
    plus each intermediate activation too large for the cache, written once and read once.
    Smaller activations stay in cache between layers and cost no memory traffic."""
    import torch

    total = sum(t.nbytes for t in tensors if isinstance(t, torch.Tensor))
    leaves = [m for m in model.modules() if not list(m.children())]

    def hook(_module: Any, _inputs: Any, output: Any) -> None:
        nonlocal total
        for value in output if isinstance(output, (tuple, list)) else [output]:
            if isinstance(value, torch.Tensor) and value.nbytes > cache_bytes:
                total += 2 * value.nbytes

    handles = [leaf.register_forward_hook(hook) for leaf in leaves]
    try:
        with torch.no_grad():
            outputs = model(*tensors)
    finally:
        for handle in handles:
            handle.remove()

    total += sum(t.nbytes for t in output_list(outputs) if isinstance(t, torch.Tensor))
    return total


def count_flops(model: nn.Module, tensors: Sequence[Any]) -> float:
    """FLOPs of one forward pass (matmuls and convolutions, 2 per multiply-add)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(*tensors)
    return float(counter.get_total_flops())


def machine_info() -> dict[str, Any]:
    cpu_model = platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            cpu_model = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu_model)
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu_model, "cores_available": len(os.sched_getaffinity(0)), "cores_total": os.cpu_count(),
        "platform": platform.platform(), "python": platform.python_version(),
    }  # fmt: skip
    try:
        import torch

        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except Exception:  # a broken CUDA install must not stop a CPU report
        pass
    return info


@dataclass(frozen=True)
class BudgetResult:
    misses: tuple[str, ...]
    checked: tuple[str, ...]

    def __bool__(self) -> bool:
        return not self.misses

    def __str__(self) -> str:
        if self.misses:
            return "FAILED | latency budget missed: " + "; ".join(self.misses)
        return "PASSED | " + "; ".join(self.checked)

    def lines(self) -> list[str]:
        return [f"FAILED {line}" for line in self.misses] + [f"PASSED {line}" for line in self.checked]


def speedups(records: Sequence[LatencyRecord], device: str = "cpu") -> dict[int, float]:
    """PyTorch median / ONNX Runtime median per batch size on ``device``."""
    by_key = {(r.backend, r.batch): r for r in records if r.device == device}
    return {
        batch: by_key[(PYTORCH, batch)].median / record.median
        for (backend, batch), record in sorted(by_key.items())
        if backend == ONNXRUNTIME and (PYTORCH, batch) in by_key
    }


def check_budgets(records: Sequence[LatencyRecord], budget: BudgetConfig, cpu_batches: Sequence[int]) -> BudgetResult:
    misses, checked = [], []
    ratios = speedups(records, "cpu")
    for batch in cpu_batches:
        wanted = budget.min_speedup(batch)
        if batch not in ratios:
            misses.append(f"min_speedup {wanted:g}x at batch {batch}: not measured")
            continue
        line = (f"min_speedup {wanted:g}x at batch {batch}: ONNX Runtime CPU is {ratios[batch]:.2f}x PyTorch "
                f"({budget.speedup_source(batch)})")
        (misses if ratios[batch] < wanted else checked).append(line)
    _check_ceilings(records, budget, "cpu", misses, checked)
    return BudgetResult(tuple(misses), tuple(checked))


def _check_ceilings(records: Sequence[LatencyRecord], budget: BudgetConfig, device: str, misses: list[str],
                    checked: list[str]) -> None:
    """``max_latency_ms`` on ``device``: the p95 of the best ONNX Runtime runner per batch."""
    for batch, ceiling in sorted(budget.max_latency_ms.get(device, {}).items()):
        measured = [r for r in records if r.device == device and r.batch == batch and runs_onnxruntime(r.backend, device)]
        if not measured:
            misses.append(f"max_latency_ms {ceiling:g} on {device} at batch {batch}: not measured")
            continue
        best = min(measured, key=lambda r: r.p95)
        line = (f"max_latency_ms {ceiling:g} on {device} at batch {batch}: p95 {best.p95 * 1e3:.2f} ms "
                f"({best.backend}; limit set in config)")  # latency ceilings have no default
        (misses if best.p95 * 1e3 > ceiling else checked).append(line)


# --- GPU: ONNX Runtime against the PyTorch paths a GPU user would pick instead ----------------


@dataclass(frozen=True)
class GpuSpeedup:
    """An ONNX Runtime GPU runner against a PyTorch GPU baseline at one batch size."""

    runner: str  # an ONNX Runtime GPU backend (harness/core/runner_kinds.py)
    baseline: str  # a PyTorch GPU backend
    batch: int
    ratio: float  # baseline median / runner median: above 1, ONNX Runtime is faster

    @property
    def verdict(self) -> str:
        shown = round(self.ratio, 2)  # the verdict agrees with the printed ratio
        return "faster" if shown > 1 else "slower" if shown < 1 else "as fast"

    @property
    def sentence(self) -> str:
        return f"{label(self.runner, 'cuda')} is {self.ratio:.2f}x {label(self.baseline, 'cuda')}: {self.verdict}"

    def __str__(self) -> str:
        return f"batch {self.batch}: {self.sentence}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict, "sentence": str(self)}


def gpu_speedups(records: Sequence[LatencyRecord]) -> list[GpuSpeedup]:
    """Every ONNX Runtime GPU runner against every PyTorch GPU baseline measured at its batch."""
    by_key = {(r.backend, r.batch): r for r in records if r.device == "cuda"}
    return [
        GpuSpeedup(runner.backend, baseline, runner.batch, by_key[(baseline, runner.batch)].median / runner.median)
        for runner in sorted(by_key.values(), key=lambda r: (r.batch, r.backend))
        if runs_onnxruntime(runner.backend, "cuda")
        for baseline in backends("cuda", PYTORCH)
        if (baseline, runner.batch) in by_key
    ]


def best_against_best(records: Sequence[LatencyRecord]) -> list[GpuSpeedup]:
    """Per batch, the fastest ONNX Runtime GPU runner against the fastest PyTorch GPU baseline."""
    medians = {(r.backend, r.batch): r.median for r in records if r.device == "cuda"}
    by_batch: dict[int, list[GpuSpeedup]] = {}
    for pair in gpu_speedups(records):
        by_batch.setdefault(pair.batch, []).append(pair)
    return [_best_pair(pairs, medians, batch) for batch, pairs in sorted(by_batch.items())]


def _best_pair(pairs: list[GpuSpeedup], medians: Mapping[tuple[str, int], float], batch: int) -> GpuSpeedup:
    runner = min({s.runner for s in pairs}, key=lambda backend: medians[(backend, batch)])
    baseline = min({s.baseline for s in pairs}, key=lambda backend: medians[(backend, batch)])
    return next(s for s in pairs if s.runner == runner and s.baseline == baseline)


def check_gpu_budgets(records: Sequence[LatencyRecord], budget: BudgetConfig) -> BudgetResult:
    """``min_gpu_speedup`` (the best ONNX Runtime GPU runner per batch and baseline) and
    ``max_latency_ms.cuda``. Every GPU limit is set in config: GPU ratios depend on the GPU."""
    misses: list[str] = []
    checked: list[str] = []
    ratios = gpu_speedups(records)
    measured = {r.batch for r in records if r.device == "cuda"}
    for baseline in backends("cuda", PYTORCH):
        floors = budget.min_gpu_speedup.get(baseline, {})
        batches = {b for b in floors if b is not None} | (measured if None in floors else set())
        for batch in sorted(batches):
            wanted = budget.gpu_speedup_floor(baseline, batch)
            assert wanted is not None
            head = f"min_gpu_speedup {wanted:g}x vs {baseline} at batch {batch}"
            candidates = [s for s in ratios if s.baseline == baseline and s.batch == batch]
            if not candidates:
                misses.append(f"{head}: not measured")
                continue
            best = max(candidates, key=lambda s: s.ratio)
            line = f"{head}: {best.sentence} (best ONNX Runtime GPU runner; limit set in config)"
            (misses if best.ratio < wanted else checked).append(line)
    _check_ceilings(records, budget, "cuda", misses, checked)
    return BudgetResult(tuple(misses), tuple(checked))
