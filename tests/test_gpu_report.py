"""The GPU report without a GPU: budgets parsed and judged, ratios worded, efficiency computed,
from synthetic latency records (the medians measured on the lent H100, DESIGN.md)."""

from __future__ import annotations

import math

import pytest

from harness.bench.measure import LatencyRecord, best_against_best, check_gpu_budgets, gpu_speedups
from harness.core import config
from harness.core.config import BudgetConfig, validate
from harness.core.errors import ConfigError
from harness.report.bench import gpu_markdown, gpu_section

H100_MS = {"pytorch": 3.36, "pytorch-cuda-graph": 0.85, "onnxruntime": 1.90, "onnxruntime-cudagraph": 1.18}


def _cuda(medians_ms=H100_MS, batch=1, **kwargs):
    return [LatencyRecord.from_times(backend, "cuda", batch, [ms / 1e3], **kwargs) for backend, ms in medians_ms.items()]


def _budget(table):
    return validate._parse_budget({"min_gpu_speedup": table})


# --- config ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "floors"),
    [
        ({"pytorch-cuda-graph": 1.0}, {"pytorch-cuda-graph": {None: 1.0}}),
        ({"pytorch": {"1": 2, "default": 1.5}}, {"pytorch": {1: 2.0, None: 1.5}}),
        ({"pytorch": 1.2, "pytorch-cuda-graph": {"8": 0.9}}, {"pytorch": {None: 1.2}, "pytorch-cuda-graph": {8: 0.9}}),
    ],
)
def test_min_gpu_speedup_holds_a_floor_per_pytorch_baseline_in_min_speedups_syntax(table, floors):
    budget = _budget(table)
    assert budget.min_gpu_speedup == floors
    assert budget.has_gpu_limits
    assert budget.default_speedup == BudgetConfig.default_speedup  # the CPU floor is untouched


def test_a_gpu_floor_for_every_batch_yields_to_a_per_batch_one():
    budget = _budget({"pytorch": {"1": 2, "default": 1.5}})
    assert budget.gpu_speedup_floor("pytorch", 1) == 2.0
    assert budget.gpu_speedup_floor("pytorch", 32) == 1.5
    assert budget.gpu_speedup_floor("pytorch-cuda-graph", 1) is None


def test_gpu_budgets_are_read_from_a_toml_config(tmp_path):
    from tests.conftest import SMALL_LOCALIZATION_NET

    path = tmp_path / "gate.toml"
    path.write_text(SMALL_LOCALIZATION_NET % {"exporter": "dynamo"} + "\n[budget]\n"
                    'min_gpu_speedup = { pytorch-cuda-graph = 1.0, pytorch = { 1 = 2.0 } }\n'
                    "max_latency_ms = { cuda = { 1 = 5 } }\n")  # fmt: skip
    budget = config.load(invocation_dir=tmp_path, config_file=path, overrides={}).budget
    assert budget.min_gpu_speedup == {"pytorch-cuda-graph": {None: 1.0}, "pytorch": {1: 2.0}}
    assert budget.max_latency_ms == {"cuda": {1: 5.0}}


def test_no_gpu_budget_is_set_unless_the_config_sets_one():
    assert not validate._parse_budget({}).has_gpu_limits
    assert not validate._parse_budget({"min_speedup": 2}).has_gpu_limits
    assert validate._parse_budget({"max_latency_ms": {"cuda": {"1": 5}}}).has_gpu_limits


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"pytorch-cudagraph": 1}, "budget.min_gpu_speedup baseline 'pytorch-cudagraph' is not one of pytorch, "
                                   "pytorch-cuda-graph. Did you mean 'pytorch-cuda-graph'?"),
        ({"onnxruntime": 1}, "baseline 'onnxruntime' is not one of pytorch, pytorch-cuda-graph"),
        (1.0, "budget.min_gpu_speedup must be a table naming the PyTorch GPU baseline, e.g. "
              "{ pytorch-cuda-graph = 1.0 }; valid baselines: pytorch, pytorch-cuda-graph"),
        ({"pytorch": {"batch1": 1}}, "budget.min_gpu_speedup.pytorch keys must be batch sizes or 'default', got 'batch1'"),
        ({"pytorch": -1}, "budget.min_gpu_speedup.pytorch must be a finite number >= 0, got -1"),
        ({"pytorch": {"1": "fast"}}, "budget.min_gpu_speedup.pytorch.1 must be int or float, got 'fast'"),
        ({"pytorch": True}, "budget.min_gpu_speedup.pytorch must be a number, got True"),
    ],
)
def test_invalid_gpu_budgets_fail_in_one_line_naming_the_valid_choices(tmp_path, table, message):
    with pytest.raises(ConfigError) as excinfo:
        config.load(invocation_dir=tmp_path, overrides={"budget": {"min_gpu_speedup": table}})
    assert message in str(excinfo.value)
    assert "\n" not in str(excinfo.value)


def test_a_misspelt_budget_key_suggests_min_gpu_speedup(tmp_path):
    with pytest.raises(ConfigError, match="Did you mean 'min_gpu_speedup'"):
        config.load(invocation_dir=tmp_path, overrides={"budget": {"min_gpu_speedups": {"pytorch": 1}}})


# --- ratios in words -------------------------------------------------------------------------


def test_every_onnx_runtime_gpu_runner_is_compared_with_both_pytorch_baselines_in_words():
    assert [str(s) for s in gpu_speedups(_cuda())] == [
        "batch 1: ONNX Runtime CUDA is 1.77x PyTorch eager: faster",
        "batch 1: ONNX Runtime CUDA is 0.45x PyTorch CUDA graph: slower",
        "batch 1: ONNX Runtime CUDA graph is 2.85x PyTorch eager: faster",
        "batch 1: ONNX Runtime CUDA graph is 0.72x PyTorch CUDA graph: slower",
    ]


def test_the_verdict_agrees_with_the_printed_ratio():
    (near,) = gpu_speedups(_cuda({"pytorch": 1.002, "onnxruntime": 1.0}))
    assert near.sentence == "ONNX Runtime CUDA is 1.00x PyTorch eager: as fast"
    (slower,) = gpu_speedups(_cuda({"pytorch": 0.99, "onnxruntime": 1.0}))
    assert slower.verdict == "slower" and slower.ratio == pytest.approx(0.99)


def test_best_against_best_pairs_the_fastest_runner_of_each_framework_per_batch():
    records = _cuda() + _cuda({"pytorch": 8.0, "pytorch-cuda-graph": 5.0, "onnxruntime": 4.0}, batch=8)
    assert [str(s) for s in best_against_best(records)] == [
        "batch 1: ONNX Runtime CUDA graph is 0.72x PyTorch CUDA graph: slower",
        "batch 8: ONNX Runtime CUDA is 1.25x PyTorch CUDA graph: faster",
    ]


def test_cpu_records_and_missing_baselines_give_no_gpu_ratio():
    cpu = [LatencyRecord.from_times(b, "cpu", 1, [0.01]) for b in ("pytorch", "onnxruntime")]
    assert gpu_speedups(cpu) == [] and best_against_best(cpu) == []
    only_graph = gpu_speedups(_cuda({"pytorch-cuda-graph": 0.85, "onnxruntime-cudagraph": 1.18}))
    assert [s.baseline for s in only_graph] == ["pytorch-cuda-graph"]


# --- efficiency ----------------------------------------------------------------------------------


def test_gpu_efficiency_is_model_flops_per_second_over_the_measured_matmul_peak():
    records = _cuda(flops=0.73e9, peak_flops=50e12)
    graph = next(r for r in records if r.backend == "pytorch-cuda-graph")
    assert graph.efficiency == pytest.approx(0.73e9 / 0.85e-3 / 50e12)  # ~1.7%
    assert gpu_section(records, unavailable=None, budget=None, budget_set=False)["matmul_peak_tflops"] == 50
    assert math.isnan(_cuda()[0].efficiency)  # no peak measured: no efficiency claimed


# --- budgets ---------------------------------------------------------------------------------------


def test_gpu_budgets_judge_the_best_onnx_runtime_runner_and_say_they_are_set_in_config():
    budget = validate._parse_budget({
        "min_gpu_speedup": {"pytorch": 2.0, "pytorch-cuda-graph": {"1": 1.0, "8": 1.0}},
        "max_latency_ms": {"cuda": {"1": 5}},
    })  # fmt: skip
    result = check_gpu_budgets(_cuda(), budget)
    assert not result
    assert result.lines() == [
        "FAILED min_gpu_speedup 1x vs pytorch-cuda-graph at batch 1: ONNX Runtime CUDA graph is 0.72x "
        "PyTorch CUDA graph: slower (best ONNX Runtime GPU runner; limit set in config)",
        "FAILED min_gpu_speedup 1x vs pytorch-cuda-graph at batch 8: not measured",
        "PASSED min_gpu_speedup 2x vs pytorch at batch 1: ONNX Runtime CUDA graph is 2.85x PyTorch eager: faster "
        "(best ONNX Runtime GPU runner; limit set in config)",
        "PASSED max_latency_ms 5 on cuda at batch 1: p95 1.18 ms (onnxruntime-cudagraph; limit set in config)",
    ]


def test_met_gpu_budgets_pass_and_cpu_budgets_ignore_gpu_ceilings():
    from harness.bench.measure import check_budgets

    budget = validate._parse_budget({"min_gpu_speedup": {"pytorch": 1.5}, "max_latency_ms": {"cuda": {"1": 0.001}}})
    assert check_gpu_budgets(_cuda(), validate._parse_budget({"min_gpu_speedup": {"pytorch": 1.5}}))
    cpu = [LatencyRecord.from_times(b, "cpu", 1, [s]) for b, s in (("pytorch", 0.02), ("onnxruntime", 0.01))]
    assert check_budgets(cpu, budget, [1])  # the GPU ceiling is the GPU budget test's to judge


# --- summary.md -----------------------------------------------------------------------------------


def test_summary_says_plainly_when_onnx_runtime_is_slower_on_the_gpu():
    text = "\n".join(gpu_markdown(gpu_section(_cuda(), unavailable=None, budget=None, budget_set=False)))
    assert "- batch 1: ONNX Runtime CUDA graph is 0.72x PyTorch CUDA graph: slower" in text
    assert "- batch 1: ONNX Runtime CUDA is 1.77x PyTorch eager: faster" in text
    assert "TF32 off in both frameworks" in text
    best = text.split("Best against best")[1]
    assert best.strip().splitlines()[-1] == "- batch 1: ONNX Runtime CUDA graph is 0.72x PyTorch CUDA graph: slower"


def test_summary_says_why_the_gpu_was_not_measured_and_that_gpu_budgets_were_not_judged():
    reason = "no CUDA device (torch.cuda.is_available() is False)"
    assert gpu_markdown(gpu_section([], unavailable=reason, budget=None, budget_set=False)) == [f"GPU: not measured: {reason}."]
    (line,) = gpu_markdown(gpu_section([], unavailable=reason, budget=None, budget_set=True))
    assert line.endswith("The GPU budgets set in config were not judged.")


def test_tf32_is_off_inside_the_gpu_runners_context_and_restored_after():
    torch = pytest.importorskip("torch")
    from harness.gate.gpu import tf32_off

    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cudnn.allow_tf32 = True
    try:
        with tf32_off():
            assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        assert torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_the_gpu_benchmark_runs_both_pytorch_baselines_the_budget_names():
    from harness.gate.gpu import GPU_BACKENDS

    assert set(config.GPU_BASELINES) < set(GPU_BACKENDS)
    assert all(b.startswith("onnxruntime") for b in set(GPU_BACKENDS) - set(config.GPU_BASELINES))
