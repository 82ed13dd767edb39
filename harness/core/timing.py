"""Where a gate session's time went: a stopwatch the session and the plugin share, and the
breakdown the reports print. The parts add up to the whole; what no part covers is reported as
``unattributed``, not hidden."""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TypeVar

from harness.core import memory

T = TypeVar("T")

# Inference inside GateSession.check_parity (the parity tests, and the dynamic-dimension ones).
PARITY_INFERENCE = ("torch_fp32", "onnxruntime", "torch_fp64")
# (key in the breakdown, label in summary.md)
PARTS = (
    ("build_and_export", "model build + export"),
    ("torch_fp32", "PyTorch fp32 inference (parity comparisons; on two lanes, ONNX Runtime runs beside it)"),
    ("onnxruntime", "ONNX Runtime inference (parity comparisons; on two lanes, the wait beyond PyTorch)"),
    ("torch_fp64", "PyTorch fp64 inference (parity comparisons)"),
    ("hypothesis", "Hypothesis overhead (generation, shrinking)"),
    ("other_checks", "other checks, less their parity comparisons (contract, determinism, ...)"),
    ("benchmarks", "benchmarks"),
    ("baseline", "production baseline (--gate-baseline: download, timing, drift)"),
    ("reports", "reports and plots"),
    ("publish", "publishing"),
    ("unattributed", "unattributed (collection, fixtures, pytest)"),
)


class Stopwatch:
    """Accumulated seconds per named part, measured with ``time.perf_counter``."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.seconds: dict[str, float] = defaultdict(float)
        self._running: list[tuple[str, float]] = []  # measurements not finished yet
        # Per test part ("tests:parity", ...), the time measured inside it (its inference).
        self.inside: dict[str, float] = defaultdict(float)
        # Per outermost phase, the highest resident memory seen during it (bytes).
        self.peak_rss: dict[str, int] = {}

    @contextmanager
    def measure(self, part: str) -> Iterator[None]:
        entry = (part, time.perf_counter())
        outermost = not self._running  # phases nest; memory is measured per outermost phase
        if outermost:
            memory.reset_peak()
        self._running.append(entry)
        try:
            yield
        finally:
            if outermost:
                peak = memory.peak_rss_bytes()
                self.peak_rss[part] = max(self.peak_rss.get(part, 0), peak)
            self._running.remove(entry)
            seconds = time.perf_counter() - entry[1]
            self.seconds[part] += seconds
            enclosing = next((p for p, _ in reversed(self._running) if p.startswith("tests:")), None)
            if enclosing is not None and not part.startswith("tests:"):
                self.inside[enclosing] += seconds

    def call(self, part: str, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)``, its time added to ``part``."""
        with self.measure(part):
            return function(*args)

    def breakdown(self) -> dict[str, Any]:
        """Seconds per part of the session so far, counting measurements still running (the
        report being written); the parts sum to ``total_s``."""
        now = time.perf_counter()
        s: dict[str, float] = defaultdict(float, self.seconds)
        for part, started in self._running:
            s[part] += now - started
        parts = {
            "build_and_export": s["build_and_export"],
            **{name: s[name] for name in PARITY_INFERENCE},
            # Each test part counts its tests' time (setup, call, teardown) minus the inference
            # measured inside them: for the parity tests, what is left is Hypothesis's own work.
            "hypothesis": s["tests:parity"] - self.inside["tests:parity"],
            "other_checks": s["tests:other"] - self.inside["tests:other"],
            "benchmarks": s["tests:benchmarks"] - self.inside["tests:benchmarks"],
            "baseline": s["tests:baseline"] - self.inside["tests:baseline"],
            "reports": s["reports"],
            "publish": s["publish"],
        }
        total = now - self.started
        parts["unattributed"] = total - sum(parts.values())
        return {
            "total_s": round(total, 3),
            "parts_s": {name: round(value, 3) for name, value in parts.items()},
            "share": {name: round(value / total, 4) if total > 0 else 0.0 for name, value in parts.items()},
            # Peak resident memory per phase (MB): export, each kind of test, reports, publishing.
            "peak_rss_mb": {name: round(value / 1e6, 1) for name, value in sorted(self.peak_rss.items())},
        }


def breakdown_markdown(timing: dict[str, Any]) -> str:
    lines = ["## Where the time went", "", "| part | seconds | share |", "| --- | --- | --- |"]
    for key, label in PARTS:
        lines.append(f"| {label} | {timing['parts_s'][key]:.1f} | {timing['share'][key]:.0%} |")
    lines.append(f"| **session** | **{timing['total_s']:.1f}** | 100% |")
    if timing.get("peak_rss_mb"):
        peaks = ", ".join(f"{part} {mb / 1e3:.2f} GB" for part, mb in timing["peak_rss_mb"].items())
        lines += ["", f"Peak resident memory per phase: {peaks}."]
    lines += ["", "From the gate session's start (pytest configure) to this report; interpreter start-up and "
              "imports before it are not included."]  # fmt: skip
    return "\n".join(lines)
