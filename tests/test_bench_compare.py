"""`onnx-gate compare` on recorded runs: pure noise is no detectable change, a real slowdown regresses.

tests/data/bench/ holds three real runs of the small LocalizationNet on this kind of machine, made by
tools/record_bench_samples.py: base.json and noise.json measure the same artifact with the same settings
(pure noise), slow.json the same artifact with ONNX Runtime's graph optimisation off (a real slowdown of
the ONNX Runtime path).
"""

import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from harness.bench.compare import CompareSettings, compare, load_run
from harness.bench.stats import IMPROVED, NO_CHANGE, NOISY, REGRESSED, judge, speedup_effect

DATA = Path(__file__).parent / "data" / "bench"
SETTINGS = CompareSettings(floor=0.10, significance=0.05, latency_fails=False)


def _history(pytester, *names):
    history = pytester.path / "reports" / "history"
    history.mkdir(parents=True, exist_ok=True)
    for name in names:
        run_id = json.loads((DATA / f"{name}.json").read_text())["onnx_gate"]["run_id"]
        shutil.copyfile(DATA / f"{name}.json", history / f"{run_id}.json")
    return history


def _cli(pytester, *args):
    return pytester.run(sys.executable, "-m", "harness.cli", *args)


def test_pure_noise_between_two_runs_of_the_same_artifact_is_no_detectable_change(pytester):
    _history(pytester, "base", "noise")
    result = _cli(pytester, "compare")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines([
        "OK | no speedup ratio regressed (2 judged, floor 10%, significance 0.05)",
        "*NO DETECTABLE CHANGE | speedup cpu/batch1: *x -> *x (*%, 95% CI [[]*%, *%[]])",
        "*NO DETECTABLE CHANGE | speedup cpu/batch4: *",
    ])  # fmt: skip
    out = pytester.path / "reports" / "compare" / "latest"
    document = json.loads((out / "compare.json").read_text())
    assert document["verdict"] == "ok"
    for effect in document["speedups"]:
        assert effect["verdict"] == NO_CHANGE and effect["low"] <= effect["change"] <= effect["high"]
        assert effect["low"] < 0.10 and effect["high"] > -0.10, effect  # the interval is not wide open either way
    markdown = (out / "compare.md").read_text()
    assert markdown.startswith("### ✅ onnx-gate benchmarks: OK | no speedup ratio regressed")


def test_onnx_runtime_with_its_optimisation_off_regresses_the_speedup_with_an_interval_below_the_floor(pytester):
    _history(pytester, "base", "slow")
    result = _cli(pytester, "compare")
    assert result.ret == 1, result.stdout.str()
    result.stdout.fnmatch_lines([
        "REGRESSED | * of the judged figures regressed: speedup cpu/batch1 -*% (95% CI [[]-*%, -*%[]])*",
        "*REGRESSED | speedup cpu/batch1: *",
        "  latency, informational: *",
        "*REGRESSED | cpu/onnxruntime/batch1: * ms -> * ms (+*%, 95% CI [[]+*%, +*%[]])",
    ])  # fmt: skip
    document = json.loads((pytester.path / "reports" / "compare" / "latest" / "compare.json").read_text())
    assert document["verdict"] == REGRESSED
    batch1 = next(e for e in document["speedups"] if e["name"] == "speedup cpu/batch1")
    assert batch1["verdict"] == REGRESSED and batch1["high"] < 0 and batch1["change"] <= -0.10
    pytorch = next(e for e in document["latencies"] if e["name"] == "cpu/pytorch/batch1")
    assert pytorch["verdict"] != REGRESSED  # only the ONNX Runtime path changed


def test_the_pull_request_markdown_puts_the_verdict_first_then_only_what_changed_then_the_details_folded():
    comparison = compare(load_run(DATA / "base.json"), load_run(DATA / "slow.json"), SETTINGS)
    markdown = comparison.markdown()
    head, folded = markdown.split("<details>")
    assert head.startswith("### ❌ onnx-gate benchmarks: REGRESSED | ")
    assert "**What changed**" in head and "| speedup cpu/batch1 |" in head
    unchanged = [e.name for e in (*comparison.speedups, *comparison.latencies) if not e.changed]
    assert unchanged and not any(f"| {name} |" in head for name in unchanged)
    assert all(f"| {e.name} |" in folded for e in (*comparison.speedups, *comparison.latencies))
    assert len(markdown) < 65536  # GitHub's limit for a comment


def test_the_reverse_of_a_slowdown_is_an_improvement_and_exits_zero():
    comparison = compare(load_run(DATA / "slow.json"), load_run(DATA / "base.json"), SETTINGS)
    assert comparison.speedups[0].verdict == IMPROVED and not comparison.regressions


def test_a_stricter_significance_widens_the_interval():
    base, noise = load_run(DATA / "base.json"), load_run(DATA / "noise.json")
    loose = compare(base, noise, SETTINGS).speedups[0]
    strict = compare(base, noise, CompareSettings(0.10, 0.01, False)).speedups[0]
    assert strict.low < loose.low and strict.high > loose.high and "99% CI" in str(strict)


@pytest.mark.parametrize(
    "change, low, high, kind, verdict",
    [
        (0.25, 0.20, 0.30, "latency", REGRESSED),
        (0.25, -0.02, 0.50, "latency", NO_CHANGE),  # the interval includes no change
        (0.05, 0.03, 0.07, "latency", NO_CHANGE),  # real, but below the 10% floor
        (-0.25, -0.30, -0.20, "speedup", REGRESSED),
        (-0.25, -0.30, -0.20, "latency", IMPROVED),
        (0.25, 0.20, 0.30, "speedup", IMPROVED),
        (-0.25, None, None, "speedup", REGRESSED),  # no samples: the floor alone decides
        (0.25, -0.02, 0.50, "speedup", NO_CHANGE),  # the interval includes no change, either kind
        (-0.25, -0.50, 0.02, "speedup", NO_CHANGE),
        (-0.25, -0.50, 0.02, "latency", NO_CHANGE),
    ],
)
def test_a_change_counts_when_its_interval_excludes_no_change_and_it_reaches_the_floor(change, low, high, kind, verdict):
    assert judge(change, low, high, kind=kind, floor=0.10) == verdict


def test_latency_regressions_fail_only_when_config_asks_and_both_runs_name_the_same_machine():
    base, slow = load_run(DATA / "base.json"), load_run(DATA / "slow.json")
    floor = 0.9  # no speedup ratio falls 90%; ONNX Runtime's latency more than doubled
    assert not compare(base, slow, CompareSettings(floor, 0.05, latency_fails=False)).regressions
    judged = compare(base, slow, CompareSettings(floor, 0.05, latency_fails=True))
    assert {e.name for e in judged.regressions} == {"cpu/onnxruntime/batch1", "cpu/onnxruntime/batch4"}
    elsewhere = replace(slow, machine={**slow.machine, "cpu": "another CPU"})
    other_machine = compare(base, elsewhere, CompareSettings(floor, 0.05, latency_fails=True))
    assert not other_machine.regressions and "different machines" in other_machine.latency_scope


def test_history_marks_the_run_whose_speedup_regressed(pytester):
    _history(pytester, "base", "noise", "slow")
    result = _cli(pytester, "compare", "--history", "3")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines([
        "history of 3 runs, *-base .. *-slow (x: regressed against the run before)",
        "  speedup cpu/batch1: *x, *x, *x x",
    ])  # fmt: skip
    out = pytester.path / "reports" / "compare" / "history"
    verdicts = [p["verdict"] for p in json.loads((out / "history.json").read_text())["speedups"]["cpu/batch1"]]
    assert verdicts == [None, NO_CHANGE, REGRESSED]
    assert (out / "trend.png").read_bytes()[:4] == b"\x89PNG"
    bad = _cli(pytester, "compare", "--history", "1")
    assert bad.ret == 2 and "a trend needs at least 2 runs, got '1'" in bad.stderr.str()


def test_bench_results_writes_what_github_action_benchmark_reads_as_custom_smaller_is_better(pytester):
    _history(pytester, "base", "slow")
    result = _cli(pytester, "bench-results", "--format", "customSmallerIsBetter", "--output", "out/bench.json")
    assert result.ret == 0, result.stderr.str()
    entries = json.loads((pytester.path / "out" / "bench.json").read_text())
    run = load_run(DATA / "slow.json")  # the latest run
    assert {e["name"] for e in entries} == {f"{key} median latency" for key in run.medians} | {
        f"{name} ONNX Runtime time / PyTorch time" for name in run.speedups}
    for entry in entries:  # the fields github-action-benchmark's customSmallerIsBetter reads
        assert isinstance(entry["name"], str) and isinstance(entry["unit"], str) and entry["value"] > 0
    ratio = next(e for e in entries if e["name"].startswith("cpu/batch1 "))
    assert ratio["value"] == pytest.approx(1 / run.speedups["cpu/batch1"], rel=1e-3) and "95% CI" in ratio["range"]
    wrong = _cli(pytester, "bench-results", "--format", "json", "--output", "x.json")
    assert wrong.ret == 2 and "invalid choice: 'json'" in wrong.stderr.str()


def test_a_burst_of_load_from_other_processes_during_the_head_run_is_no_detectable_change():
    # burst.json: base's settings, with one busy process per core for part of each batch size's
    # measurement. Measured interleaved, the burst lands on PyTorch and ONNX Runtime alike.
    base, burst = load_run(DATA / "base.json"), load_run(DATA / "burst.json")
    comparison = compare(base, burst, SETTINGS)
    assert [e.verdict for e in comparison.speedups] == [NO_CHANGE, NO_CHANGE], [str(e) for e in comparison.speedups]
    pytorch = burst.samples["cpu/pytorch/batch1"]
    assert max(pytorch) > 2 * min(pytorch)  # the burst is in the rounds: PyTorch's slowest call
    assert burst.loads["cpu/pytorch/batch1"]["load_1min_after"] > base.loads["cpu/pytorch/batch1"]["load_1min_after"]
    assert "machine while measuring: base load " in comparison.lines()[2]


def _speedup_samples(ratio: float, spread: float, rounds: int = 60, seed: int = 0):
    """PyTorch and ONNX Runtime per-call times whose rounds scatter by ``spread`` (relative)."""
    rng = np.random.default_rng(seed)
    ort = 1e-3 * (1 + spread * rng.uniform(-1, 1, rounds))
    return tuple(ratio * 1e-3 * (1 + spread * rng.uniform(-1, 1, rounds))), tuple(ort)


def test_a_change_within_the_runs_own_spread_is_called_noisy_not_a_change():
    base = _speedup_samples(4.0, spread=0.8, seed=1)
    head = _speedup_samples(4.0 * 1.8, spread=0.8, seed=2)
    effect = speedup_effect("speedup cpu/batch1", base, head, floor=0.10, significance=0.05)
    assert effect.low > 0.10  # the interval alone would call it an improvement
    assert effect.verdict == NOISY and not effect.regressed and not effect.changed, str(effect)
    assert "own speedup interval reaches" in str(effect)


def test_a_change_far_beyond_the_runs_own_spread_is_still_called():
    base = _speedup_samples(4.0, spread=0.8, seed=1)
    head = _speedup_samples(4.0 * 0.3, spread=0.8, seed=2)
    effect = speedup_effect("speedup cpu/batch1", base, head, floor=0.10, significance=0.05)
    assert effect.verdict == REGRESSED, str(effect)


def test_quiet_runs_with_a_real_change_are_not_called_noisy():
    base = _speedup_samples(4.0, spread=0.02, seed=1)
    head = _speedup_samples(4.0 * 0.8, spread=0.02, seed=2)
    effect = speedup_effect("speedup cpu/batch1", base, head, floor=0.10, significance=0.05)
    assert effect.verdict == REGRESSED, str(effect)
