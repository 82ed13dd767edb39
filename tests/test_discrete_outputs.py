"""Integer and bool outputs are compared exactly, and the report says how small a flip rate that
many comparisons would have caught."""

from __future__ import annotations

import tomllib

import numpy as np
import pytest

from harness.checks.parity_stats import describe_exact, detectable_flip_rate
from harness.compare.rule import judge_output
from harness.core import config as gate_config
from harness.core.config import Tolerance
from harness.core.strategies import InputCase
from harness.gate.session import GateSession
from harness.report.run_report import gate_document, summary_markdown
from harness.runtime.export import export_onnx
from tests import user_models
from tests.conftest import HERE

TAGGER = """
model = "user_models:argmax_tagger"
exporter = "torchscript"
outputs = ["tags"]
report_dir = "reports"
[[inputs]]
name = "features"
shape = ["batch", "time", 16]
range = [-2.0, 2.0]
dims = { batch = [1, 4], time = [1, 64] }
"""
PROBES = [InputCase(family=f, sizes={"batch": 4, "time": 64}, seed=s) for f in ("normal", "uniform") for s in range(6)]


def test_the_detectable_flip_rate_is_the_rate_seen_at_least_once_with_95_percent_probability():
    for compared in (1, 300, 30_000):
        rate = detectable_flip_rate(compared)
        assert (1 - rate) ** compared == pytest.approx(0.05)
    assert detectable_flip_rate(30_000) == pytest.approx(3 / 30_000, rel=0.01)
    assert "above 0.0001 would have been seen with 95% probability" in describe_exact(29_956, 0)


@pytest.mark.parametrize("dtype", ["int64", "bool"])
def test_one_flipped_value_among_thousands_blocks(dtype):
    expected = (np.arange(5000) % 7).astype(dtype)
    actual = expected.copy()
    actual[1234] = not actual[1234] if dtype == "bool" else 3 - actual[1234]
    verdict = judge_output("tags", actual, expected, None, Tolerance()).comparison
    assert not verdict and verdict.discrete and verdict.mismatched == 1 and verdict.values == 5000
    assert "1 of 5000 values differ" in str(verdict)
    assert judge_output("tags", expected.copy(), expected, None, Tolerance()).comparison


def _session(tmp_path, *, head_through_fp16: bool) -> GateSession:
    config = gate_config.parse(tomllib.loads(TAGGER), tmp_path, search_dirs=(HERE,))
    path = tmp_path / "tagger.onnx"
    export_onnx(user_models.argmax_tagger(head_through_fp16=head_through_fp16), config, path)
    session = GateSession(gate_config.parse({**tomllib.loads(TAGGER), "onnx": str(path)}, tmp_path, search_dirs=(HERE,)),
                          work_dir=tmp_path)  # fmt: skip
    session.prepare()
    return session


@pytest.mark.checks
def test_a_correct_argmax_output_reports_how_many_values_were_compared_and_the_rate_that_would_show(tmp_path):
    from harness.report.outcome import build_outcome

    session = _session(tmp_path, head_through_fp16=False)
    assert all(session.check_parity(case) for case in PROBES)
    stats = session.parity_summary()["outputs"]["tags"]
    assert stats["compared_exactly"] == len(PROBES) * 4 * 64 and stats["values_differing"] == 0
    summary = summary_markdown(gate_document(build_outcome(session, exit_status=0, hypothesis_profile="test")))
    rate = detectable_flip_rate(len(PROBES) * 4 * 64)
    assert f"3,072 values compared exactly, none differ: a flip rate above {rate:.2g}" in summary


@pytest.mark.checks
def test_an_argmax_output_of_a_half_precision_head_blocks_once_enough_values_are_compared(tmp_path):
    """The half-precision head flips about 2e-4 of the tags (measured over 256,000): 3,072
    comparisons catch that rate with 46% probability only (the report would say a rate above
    9.7e-4 would show); 20,480 catch it with 98%, and on these seeds they do. Exact comparison
    alone is only as strong as its sample; the float logits before the argmax hold the evidence."""
    session = _session(tmp_path, head_through_fp16=True)
    cases = [InputCase(family="normal", sizes={"batch": 4, "time": 64}, seed=100 + s) for s in range(80)]
    results = [session.check_parity(case) for case in cases]
    stats = session.parity_summary()["outputs"]["tags"]
    assert stats["values_differing"] > 0, stats
    assert not all(results)
    assert "values differ" in str(next(r for r in results if not r))
