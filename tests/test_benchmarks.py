"""Latency benchmarks: budgets that gate, GPU skips that say why, reports, run comparisons."""

import json
import sys

import pytest

from tests.conftest import BENCHMARKS, CONFORMANCE

QUICK_BENCH = "\n[bench]\nbatches = [1, 2]\n"


def test_a_budget_that_cannot_be_met_fails_the_session_naming_budget_value_and_batch(project):
    project.write_config(extra=QUICK_BENCH + "\n[budget]\nmin_speedup = 1000\nmax_latency_ms = { cpu = { 2 = 0.001 } }\n")
    run = project.run("--gate-bench-quick", "-rs", paths=(CONFORMANCE, BENCHMARKS))
    assert run.result.ret == 1
    assert run.status("latency_budget") == "failed"
    assert run.status("latency_cpu") == "passed"
    assert "latency_budget failed" in run.document["reasons"]
    run.result.stdout.fnmatch_lines([
        "*min_speedup 1000x at batch 1: ONNX Runtime CPU is *x PyTorch*",
    ])  # fmt: skip
    assert "max_latency_ms 0.001 on cpu at batch 2: p95 " in run.result.stdout.str()


def test_a_met_budget_passes_and_the_report_has_the_latency_table_and_chart(project):
    project.write_config(extra=QUICK_BENCH + "\n[budget]\nmin_speedup = 0\n")
    run = project.run("--gate-bench-quick", "-rs", paths=(CONFORMANCE, BENCHMARKS))
    assert run.result.ret == 0, run.result.stdout.str()
    assert {"latency_cpu", "latency_budget"} <= set(run.document["required_checks"])
    folder = project.path / "reports" / run.document["run_id"]
    summary = (folder / "summary.md").read_text()
    assert "- PASSED min_speedup 0x at batch 2: ONNX Runtime CPU is " in summary
    assert "(limit set in config)" in summary and "built-in default)" not in summary
    assert "## Latency" in summary and "| cpu | onnxruntime | 1 |" in summary and "| cpu | pytorch | 2 |" in summary
    assert "original claim" in summary and "20-30 ms" in summary
    assert (folder / "latency.png").read_bytes()[:4] == b"\x89PNG"
    bench = json.loads((folder / "benchmark.json").read_text())
    assert len(bench["benchmarks"]) == 4  # pytest-benchmark's own records
    # Both backends of a batch size come from one interleaved loop: pytest-benchmark holds the
    # very times the gate's records hold, and the load the machine was under is recorded.
    by_name = {b["name"]: b for b in bench["benchmarks"]}
    for record in bench["onnx_gate"]["records"]:
        own = by_name[f"test_cpu_latency[batch{record['batch']}-{record['backend']}]"]
        assert own["stats"]["rounds"] == record["rounds"] and own["stats"]["min"] == record["min"]
        assert record["extra"]["interleaved_with"] == ["pytorch", "onnxruntime"]
        assert set(record["extra"]["load"]) >= {"load_1min_before", "load_1min_after", "cpu_steal_share"}
        if record["backend"] == "onnxruntime":  # the limit of a sequential executor, node by node
            nodes = record["extra"]["node_roofline"]
            assert nodes["bound_ms"] > 0 and len(nodes["furthest"]) == min(5, nodes["nodes"])
            assert f"Per-node roofline, cpu onnxruntime batch {record['batch']}: " in summary
    section = bench["onnx_gate"]
    assert set(section["speedups"]["cpu"]) == {"1", "2"}
    for record in section["records"]:
        assert 0 < record["min"] <= record["median"] <= record["p95"]
        assert record["throughput_per_s"] > 0 and 0 < record["efficiency"] < 1.5
        assert record["bound"] in ("memory", "compute") and record["roofline_efficiency"] > 0
        assert record["bytes_moved"] > 0 and record["roofline_ms"] > 0
        # compare's statistics read the per-round samples; gate.json stays short without them.
        assert len(record["samples"]) == record["rounds"] and min(record["samples"]) == record["min"]
    assert all("samples" not in r for r in run.document["benchmarks"]["records"])
    assert section["threads"] >= 1 and section["sgemm_peak_gflops"] > 0 and section["machine"]["cpu"]
    assert section["read_bandwidth_gbs"] > 0
    assert "| roofline efficiency | FLOP efficiency |" in summary and "-bound) |" in summary
    assert (project.path / "reports" / "history" / f"{run.document['run_id']}.json").is_file()


def test_gpu_benchmarks_skip_and_say_why_on_a_cpu_only_machine_and_the_report_is_still_written(project):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the skip path is for CPU-only machines")
    project.write_config(extra=QUICK_BENCH + "\n[budget]\nmin_speedup = 0\nmin_gpu_speedup = { pytorch-cuda-graph = 1.0 }\n")
    run = project.run("--gate-bench-quick", "-rs", paths=(BENCHMARKS,))
    outcomes = run.result.parseoutcomes()
    assert outcomes.get("passed", 0) >= 5, run.result.stdout.str()  # 4 CPU latencies and the CPU budget
    # GPU parity, 4 backends x 2 batches, the GPU budget; and the production baseline (none given)
    assert outcomes.get("skipped") == 11
    run.result.stdout.fnmatch_lines([  # -rs groups the skips by reason and line
        "*SKIPPED [[]1[]]*test_gpu_latency.py:*: no GPU benchmark: no CUDA device (torch.cuda.is_available() is False)",
        "*SKIPPED [[]8[]]*test_gpu_latency.py:*: no GPU benchmark: no CUDA device*",
        "*SKIPPED [[]1[]]*test_gpu_latency.py:*: no GPU benchmark: no CUDA device*",
    ])  # fmt: skip
    run.result.stdout.fnmatch_lines(["*SKIPPED [[]1[]]*test_baseline.py:*: no --gate-baseline given*"])
    for check in ("gpu_parity", "latency_gpu", "latency_gpu_budget"):
        assert run.status(check) == "skipped" and check not in run.document["required_checks"]
    folder = project.path / "reports" / run.document["run_id"]
    summary = (folder / "summary.md").read_text()
    assert "GPU: not measured: no CUDA device (torch.cuda.is_available() is False). " \
           "The GPU budgets set in config were not judged." in summary
    assert "| cpu | onnxruntime | 1 |" in summary and "| cuda |" not in summary
    gpu = json.loads((folder / "benchmark.json").read_text())["onnx_gate"]["gpu"]
    assert gpu["unavailable"].startswith("no CUDA device") and gpu["speedups"] == [] and gpu["budget_set"]


def _history_file(folder, run_id, speedup_batch1, ort_ms=10.0):
    pytorch_ms = ort_ms * speedup_batch1
    records = [
        {"key": "cpu/onnxruntime/batch1", "median": ort_ms / 1e3},
        {"key": "cpu/pytorch/batch1", "median": pytorch_ms / 1e3},
    ]
    document = {"benchmarks": [], "onnx_gate": {"run_id": run_id, "records": records, "speedups": {"cpu": {"1": speedup_batch1}, "cuda": {}}}}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{run_id}.json").write_text(json.dumps(document))


def _compare(pytester, *args):
    return pytester.run(sys.executable, "-m", "harness.cli", "compare", "--report-dir", "reports", *args)


def test_compare_judges_runs_recorded_before_samples_were_kept_on_their_medians_against_the_floor(pytester):
    history = pytester.path / "reports" / "history"
    _history_file(history, "20260101T000000Z-aaaa", 2.5)
    _history_file(history, "20260102T000000Z-bbbb", 2.0)  # -20%
    result = _compare(pytester)
    assert result.ret == 1
    result.stdout.fnmatch_lines([
        "REGRESSED | 1 of the judged figures regressed: speedup cpu/batch1 -20.0% (no interval: *)",
        "compare 20260101T000000Z-aaaa (base) -> 20260102T000000Z-bbbb (head)",
        "  REGRESSED | speedup cpu/batch1: 2.50x -> 2.00x (-20.0%, no interval: the runs kept no per-round samples)",
        "    NO DETECTABLE CHANGE | cpu/onnxruntime/batch1: 10.00 ms -> 10.00 ms (+0.0%, no interval: *)",
    ])  # fmt: skip
    out = pytester.path / "reports" / "compare" / "20260101T000000Z-aaaa__20260102T000000Z-bbbb"
    assert "| speedup cpu/batch1 | 2.50x | 2.00x | -20.0% | - | regressed |" in (out / "compare.md").read_text()
    assert json.loads((out / "compare.json").read_text())["verdict"] == "regressed"
    assert (out / "trend.png").read_bytes()[:4] == b"\x89PNG"


def test_compare_on_equal_ratios_from_a_slower_machine_exits_zero(pytester):
    history = pytester.path / "reports" / "history"
    _history_file(history, "20260101T000000Z-aaaa", 2.5)
    _history_file(history, "20260102T000000Z-bbbb", 2.5, ort_ms=30.0)  # slower machine, same ratio
    result = _compare(pytester)
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines([
        "OK | no speedup ratio regressed (1 judged, floor 10%, significance 0.05)",
        "    REGRESSED | cpu/onnxruntime/batch1: 10.00 ms -> 30.00 ms (+200.0%, *)",  # shown, not gating
    ])  # fmt: skip


def test_compare_names_runs_explicitly_and_explains_what_is_missing(pytester):
    history = pytester.path / "reports" / "history"
    _history_file(history, "20260101T000000Z-aaaa", 2.5)
    assert _compare(pytester, "20260101", "20260101T000000Z-aaaa").ret == 0
    missing = _compare(pytester, "nope", "20260101")
    assert missing.ret == 2
    assert "no run in reports/history match 'nope'" in missing.stderr.str()
    alone = _compare(pytester)
    assert alone.ret == 2 and "need 2 benchmark run(s)" in alone.stderr.str()


def test_benchmark_json_target_works_with_every_pytest_benchmark_version(tmp_path):
    from harness.plugin.hooks import BenchmarkJson

    path = tmp_path / "benchmark.json"
    target = BenchmarkJson(path)
    assert not path.exists()  # nothing is created until pytest-benchmark writes
    with target as handle:  # pytest-benchmark 5.1 and 5.2: an open file (argparse.FileType)
        handle.write(b'{"version": "5.2"}')
    assert path.read_bytes() == b'{"version": "5.2"}'
    with open(target, "wb") as handle:  # pytest-benchmark 5.3: a path
        handle.write(b'{"version": "5.3"}')
    assert path.read_bytes() == b'{"version": "5.3"}' and f"{target}" == str(path)


def _records(ratios):
    from harness.bench.measure import LatencyRecord

    return [
        LatencyRecord.from_times(backend, "cpu", batch, [seconds])
        for batch, ratio in ratios.items()
        for backend, seconds in (("pytorch", 0.01 * ratio), ("onnxruntime", 0.01))
    ]


@pytest.mark.parametrize(
    "budget, sources",
    [
        ("", {1: "built-in default", 8: "built-in default"}),
        ("min_speedup = { 1 = 1.5 }", {1: "limit set in config", 8: "built-in default"}),
        ("min_speedup = { 1 = 1.5, default = 0.9 }", {1: "limit set in config", 8: "limit set in config"}),
        ("min_speedup = 0.9", {1: "limit set in config", 8: "limit set in config"}),
    ],
)
def test_each_budget_limit_says_whether_it_is_a_built_in_default_or_set_in_config(tmp_path, budget, sources):
    from harness.bench.measure import check_budgets
    from harness.core.config import load
    from tests.conftest import SMALL_LOCALIZATION_NET

    path = tmp_path / "gate.toml"
    path.write_text(SMALL_LOCALIZATION_NET % {"exporter": "dynamo"} + "\n[budget]\n" + budget + "\n")
    config = load(invocation_dir=tmp_path, config_file=path, overrides={})
    # 0.76x at batch 8: a correct export on a 16-core host, which the built-in default must pass.
    result = check_budgets(_records({1: 1.66, 8: 0.76}), config.budget, [1, 8])
    for batch, source in sources.items():
        line = next(line for line in result.lines() if f"at batch {batch}:" in line)
        assert line.endswith(f"({source})"), line
    if not budget:
        assert result, str(result)
