"""Where the time went: the report's breakdown of the session adds up to the whole."""

from __future__ import annotations

import time

import pytest

from harness.core.timing import PARTS, Stopwatch


def test_the_stopwatch_counts_a_measurement_still_running_and_the_parts_sum_to_the_total():
    watch = Stopwatch()
    with watch.measure("build_and_export"):
        time.sleep(0.02)
    with watch.measure("tests:parity"):
        watch.call("torch_fp64", time.sleep, 0.03)
        time.sleep(0.01)
    with watch.measure("reports"):
        time.sleep(0.01)
        timing = watch.breakdown()
    parts = timing["parts_s"]
    assert set(parts) == {key for key, _ in PARTS}
    assert parts["torch_fp64"] >= 0.03 and 0.005 <= parts["hypothesis"] < 0.03
    assert parts["reports"] >= 0.01  # still running when the report took its numbers
    assert sum(parts.values()) == pytest.approx(timing["total_s"], abs=0.01)


def test_the_report_breaks_the_session_time_into_parts_that_add_up(project):
    project.write_config()
    run = project.run(subprocess=True)
    assert run.result.ret == 0, run.result.stdout.str()
    timing = run.document["timing"]
    parts = timing["parts_s"]
    assert sum(parts.values()) == pytest.approx(timing["total_s"], abs=0.02)
    measured = ("build_and_export", "torch_fp32", "torch_fp64", "hypothesis", "other_checks")
    for name in (*measured, "reports"):
        assert parts[name] > 0, (name, parts)
    # On two lanes ONNX Runtime runs beside PyTorch fp32, and its part is only the wait beyond it.
    lanes = run.document["execution"]["threads_per_lane"]
    assert parts["onnxruntime"] >= 0 if lanes else parts["onnxruntime"] > 0, (lanes, parts)
    assert parts["benchmarks"] == parts["publish"] == 0
    # The float64 inference the breakdown counts is the one the parity section reports.
    assert parts["torch_fp64"] == pytest.approx(run.document["parity"]["fp64_reference_seconds"], abs=0.05)
    assert 0 <= parts["unattributed"] < 0.5 * timing["total_s"], parts
    summary = (project.path / "reports" / run.document["run_id"] / "summary.md").read_text()
    assert "## Where the time went" in summary
    # Each finished outermost phase's own peak resident memory: the export's, each kind of test's
    # (the reports are still being written when gate.json takes its numbers).
    peaks = timing["peak_rss_mb"]
    assert {"build_and_export", "tests:parity", "tests:other"} <= peaks.keys(), peaks
    assert all(100 < mb < 24_000 for mb in peaks.values()), peaks
    assert "Peak resident memory per phase: build_and_export " in summary
    assert "| Hypothesis overhead (generation, shrinking) |" in summary and "| **session** |" in summary
