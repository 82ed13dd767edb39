"""What a training job's log shows of an in-process gate: one line per phase (export, checks,
benchmarks, publish) and the verdict, through the ``onnx_gate`` logger, so that the job's own
handlers decide where they go. The full pytest output goes to the report folder instead."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harness.report.outcome import GateOutcome
    from harness.runtime.export import ArtifactInfo

from harness.bench.measure import speedups
from harness.checks.latency import BASELINE, LATENCY_BUDGET, LATENCY_CPU, LATENCY_GPU, LATENCY_GPU_BUDGET

LOGGER = logging.getLogger("onnx_gate")
# Checks of the benchmarks phase, summed up on its own line.
_BENCHMARK_CHECKS = tuple(c.name for c in (LATENCY_CPU, LATENCY_BUDGET, BASELINE, LATENCY_GPU, LATENCY_GPU_BUDGET))


def export_line(artifact: ArtifactInfo | None, error: str | None, cache_status: str | None) -> tuple[int, str]:
    if artifact is None:
        return logging.WARNING, f"onnx-gate export: failed: {error or 'no artifact'}"
    how = "reused from the export cache" if cache_status == "hit" else f"{artifact.export_seconds:.1f} s"
    made = "given file" if artifact.origin == "given" else f"{artifact.origin} exporter, opset {artifact.opset}"
    return logging.INFO, (
        f"onnx-gate export: {made}, {how}, {_size(artifact.size_bytes)}, sha256 {artifact.sha256[:12]}"
    )


def _bare(message: str) -> str:
    """A ledger message without its test id and exception name: what the check found."""
    test, sep, rest = message.partition(": ")
    text = rest if sep and "::" in test else message
    for prefix in ("AssertionError: ", "Failed: ", "FAILED | "):
        text = text.removeprefix(prefix)
    return text


def _size(size_bytes: int) -> str:
    return f"{size_bytes / 1e6:.1f} MB" if size_bytes >= 100_000 else f"{size_bytes / 1e3:.1f} kB"


def _shown(path: Path) -> Path:
    """A path below the working folder as a relative one, as the job would have written it."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path


def outcome_lines(outcome: GateOutcome) -> list[tuple[int, str]]:
    """The checks, benchmarks, publish and verdict lines, as (level, message)."""
    lines = []
    judged = {n: r for n, r in outcome.checks.items() if n not in _BENCHMARK_CHECKS and r["status"] in ("passed", "failed")}
    passed = [name for name, record in judged.items() if record["status"] == "passed"]
    failed = [(name, record) for name, record in judged.items() if record["status"] == "failed"]
    text = f"onnx-gate checks: {len(passed)} of {len(judged)} passed"
    if failed:
        name, record = failed[0]
        first = _bare(next(iter(record.get("messages") or []), ""))
        text += f"; {name} failed" + (f": {first}" if first else "") + (f"; {', '.join(n for n, _ in failed[1:])} failed too" if len(failed) > 1 else "")
    lines.append((logging.INFO if not failed else logging.WARNING, text))
    measured = speedups(list(outcome.latency), "cpu")
    if measured:
        spread = ", ".join(f"batch {batch} x{ratio:.2f}" for batch, ratio in measured.items())
        lines.append((logging.INFO, f"onnx-gate benchmarks: ONNX Runtime vs PyTorch on CPU: {spread}"))
    else:
        status = {n: r["status"] for n, r in outcome.checks.items() if n in _BENCHMARK_CHECKS}
        lines.append((logging.INFO, f"onnx-gate benchmarks: none measured ({status.get('latency_cpu', 'not run')})"))
    published = outcome.publish
    if published is None:
        lines.append((logging.INFO, "onnx-gate publish: not asked"))
    else:
        lines.append((logging.INFO if published else logging.WARNING, f"onnx-gate publish: {published}"))
    verdict = "PASSED" if outcome.passed else "FAILED | " + "; ".join(outcome.verdict.reasons or (str(published),))
    lines.append((
        logging.INFO if outcome.passed else logging.WARNING,
        f"onnx-gate verdict: {verdict} (report: {_shown(outcome.report_dir / 'summary.md')})",
    ))  # fmt: skip
    return lines


def log(lines: list[tuple[int, str]]) -> None:
    for level, message in lines:
        LOGGER.log(level, message)
