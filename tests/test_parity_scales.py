"""Judgement at the scale of each value: a small-scale slice of one output (0-1 scores beside
pixel box coordinates) is judged against its own noise, not hidden behind the large values'."""

from __future__ import annotations

import tomllib

import numpy as np
import pytest

from harness.checks.parity import check_parity
from harness.compare.rule import FP32_EPS, compare_noise, scale_sets
from harness.core import config as gate_config
from harness.core.strategies import InputCase
from harness.gate.session import GateSession
from harness.runtime.export import export_onnx
from tests import user_models
from tests.conftest import HERE

DETECTOR = """
model = "user_models:boxes_and_scores"
exporter = "torchscript"
outputs = ["detections"]
[[inputs]]
name = "anchors"
shape = ["batch", 200, 16]
range = [-2.0, 2.0]
dims = { batch = [1, 4] }
"""
FACTOR = gate_config.Tolerance().noise_factor
PROBES = [InputCase(family=f, sizes={"batch": b}, seed=3) for f in ("normal", "uniform") for b in (1, 4)]


def _session(tmp_path, *, scores_through_fp16: bool) -> GateSession:
    path = tmp_path / "detector.onnx"
    config = gate_config.parse(tomllib.loads(DETECTOR), tmp_path, search_dirs=(HERE,))
    export_onnx(user_models.boxes_and_scores(scores_through_fp16=scores_through_fp16), config, path)
    given = gate_config.parse({**tomllib.loads(DETECTOR), "onnx": str(path)}, tmp_path, search_dirs=(HERE,))
    session = GateSession(given, work_dir=tmp_path)
    session.prepare()
    return session


def _whole_output_ratio(session: GateSession, case: InputCase) -> float:
    """What the rule judged before scales: PyTorch's worst error over the whole tensor, at least
    2 ulps of its largest value (a box coordinate)."""
    feeds = case.materialize(session.config.inputs)
    onnx, fp32 = session.ort_runner.infer(feeds)["detections"], session.torch_runner.infer(feeds)["detections"]
    fp64 = session.fp64_runner.infer(feeds)["detections"]
    floor = max(float(np.abs(fp32 - fp64).max()), 2 * FP32_EPS * float(np.abs(fp64).max()))
    return float(np.abs(onnx - fp64).max()) / floor


@pytest.mark.checks
def test_scores_that_went_through_fp16_beside_pixel_boxes_are_blocked_by_graph_fidelity(tmp_path):
    session = _session(tmp_path, scores_through_fp16=True)
    # Judged over the whole tensor, the fp16 scores hide behind the boxes' noise floor...
    assert max(_whole_output_ratio(session, case) for case in PROBES) < FACTOR
    # ...the graph in float64 is not the model: its scores are rounded to fp16.
    fidelity = session.check_fidelity(root=HERE.parent)
    assert not fidelity and fidelity.worst.ratio > 100, str(fidelity)
    assert str(fidelity).startswith("FAILED | the graph is not the model: detections (graph fp64 vs PyTorch fp64")
    # Every module agrees; the rounding is in the model's own forward, named with its line.
    assert fidelity.departure is not None and fidelity.departure.module == "", str(fidelity)
    assert "in the model's own forward" in str(fidelity) and "user_models.py:" in str(fidelity), str(fidelity)


@pytest.mark.checks
def test_without_graph_fidelity_the_scale_sets_still_block_the_fp16_scores(tmp_path):
    """Where fidelity cannot judge (ops with no float64 reference), the runtime rule judges alone
    with its scale sets: at their own scale the scores are hundreds of times their own noise."""
    session = _session(tmp_path, scores_through_fp16=True)
    results = [
        check_parity(case, session.config, session.torch_runner, session.ort_runner, fp64_reference=session.fp64_reference)
        for case in PROBES
    ]  # fmt: skip
    assert not any(results), str(results[0])
    worst = max((n for r in results for n in r.noise), key=lambda n: n.judged_ratio)
    assert worst.judged_ratio > 10 * FACTOR and "values of magnitude <=" in worst.scale, str(worst)


@pytest.mark.checks
def test_a_correct_export_of_the_same_head_passes(tmp_path):
    session = _session(tmp_path, scores_through_fp16=False)
    fidelity = session.check_fidelity(root=HERE.parent)
    assert fidelity and fidelity.worst.ratio < 1, str(fidelity)
    for case in PROBES:
        result = session.check_parity(case)
        assert result, str(result)


def test_scale_sets_are_nested_large_and_start_with_the_whole_output():
    values = np.concatenate([np.linspace(100, 640, 800), np.linspace(0, 1, 4000), np.full(10, 1e-9)])
    sets = scale_sets(values)
    assert sets[0][0].all() and sets[0][1] == pytest.approx(2 * FP32_EPS * 640)
    assert len(sets) == 2  # 1e-9 values are too few for a set of their own
    members, slack = sets[1]
    assert members.sum() == 4010 and slack == pytest.approx(2 * FP32_EPS * 1.0)


def test_a_few_unlucky_small_values_do_not_make_a_scale_of_their_own():
    """PyTorch exact on a handful of small values (ResNet/large): no set, no false block."""
    rng = np.random.default_rng(0)
    exact = np.concatenate([rng.uniform(100, 1000, 5000), rng.uniform(-1e-3, 1e-3, 50)])
    fp32 = exact + rng.normal(0, 1e-5, exact.size)
    fp32[5000:] = exact[5000:]  # PyTorch happened to be exact there
    onnx = exact + rng.normal(0, 1e-5, exact.size)
    assert compare_noise("y", onnx, fp32, exact, FACTOR)
