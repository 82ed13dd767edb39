"""On degenerate inputs (blank images, constant audio) PyTorch can be exact by luck: ONNX Runtime
less accurate than PyTorch there, yet within atol/rtol, is a finding about the runtime, not a
block, once graph fidelity shows the graph is the model. NaN, or values beyond the fixed bound,
still block."""

from __future__ import annotations

import tomllib

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from harness.checks.parity import degenerate_inputs
from harness.compare.rule import judge_output
from harness.core import config as gate_config
from harness.core.config import Tolerance
from harness.core.strategies import InputCase
from harness.gate.session import GateSession
from tests.conftest import HERE

UNET = """
model = "user_models:group_norm_unet"
exporter = "dynamo"
outputs = ["mask"]
[[inputs]]
name = "image"
shape = ["batch", 3, "height", "width"]
range = [0.0, 1.0]
dims = { batch = [1, 4], height = [16, 64], width = [16, 64] }
"""
BLANK = [
    InputCase(family="zeros", sizes={"batch": 2, "height": 64, "width": 64}),
    InputCase(family="constant", sizes={"batch": 2, "height": 64, "width": 64}, constant=0.5),
]


def _session(folder, onnx_path=None) -> GateSession:
    section = tomllib.loads(UNET) | ({"onnx": str(onnx_path)} if onnx_path else {})
    session = GateSession(gate_config.parse(section, folder, search_dirs=(HERE,)), work_dir=folder)
    session.prepare()
    assert session.artifact is not None, session.artifact_error
    return session


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> GateSession:
    """A correct dynamo export: GroupNorm lowered to InstanceNormalization, whose ONNX Runtime
    kernel is less accurate than PyTorch's on blank images (65x PyTorch's error at 64x64)."""
    return _session(tmp_path_factory.mktemp("unet"))


@pytest.mark.checks
def test_a_correct_group_norm_model_on_blank_images_passes_with_a_finding(good, tmp_path):
    # The ill-conditioned U-Net's graph is the model, in float64, on blank images too.
    fidelity = good.check_fidelity(root=HERE.parent)
    assert fidelity and fidelity.worst.ratio < 1, str(fidelity)
    for case in BLANK:
        result = good.check_parity(case)
        assert result, str(result)
        finding = next(f for f in result.findings if f.kind == "runtime")
        assert not finding.blocking and finding.value > gate_config.Tolerance().noise_factor
        assert str(finding).startswith("FINDING | mask: ONNX Runtime (output made by "), str(finding)
        assert "x PyTorch's fp32 noise" in str(finding) and "within atol/rtol" in str(finding), str(finding)


@pytest.mark.checks
def test_without_graph_fidelity_the_degenerate_input_waiver_still_applies(good):
    """Where fidelity cannot judge, the runtime rule judges alone and keeps its waiver."""
    from harness.checks.parity import check_parity

    for case in BLANK:
        result = check_parity(case, good.config, good.torch_runner, good.ort_runner, fp64_reference=good.fp64_reference)
        assert result, str(result)
        finding = next(f for f in result.findings if f.kind == "degenerate")
        assert "ONNX Runtime is less accurate than PyTorch on" in str(finding)


@pytest.mark.checks
def test_on_ordinary_images_the_same_export_needs_no_finding(good):
    result = good.check_parity(InputCase(family="normal", sizes={"batch": 2, "height": 64, "width": 64}, seed=1))
    assert result and not result.findings, str(result)


@pytest.mark.checks
def test_a_defect_beyond_the_fixed_bound_on_blank_images_still_blocks(good, tmp_path):
    model = onnx.load(str(good.artifact.path))
    bias = next(init for init in model.graph.initializer if init.name == "out.bias")
    bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + np.float32(1e-3), bias.name))
    onnx.save(model, str(tmp_path / "bias.onnx"))
    session = _session(tmp_path, tmp_path / "bias.onnx")
    for case in BLANK:
        result = session.check_parity(case)
        assert not result and not any(f.kind == "degenerate" for f in result.findings), str(result)


def test_nan_on_constant_inputs_still_blocks():
    exact = np.linspace(-1, 1, 4096)
    fp32 = exact.astype(np.float32)
    onnx_values = fp32.copy()
    onnx_values[7] = np.nan
    judged = judge_output("y", onnx_values, fp32, exact, Tolerance(), degenerate="constant inputs")
    assert not judged.comparison and "NaN/Inf" in judged.comparison.reason
    assert not any(f.kind == "degenerate" for f in judged.findings)


def test_degenerate_inputs_are_those_where_every_input_holds_one_value():
    assert degenerate_inputs({"a": np.zeros((2, 3)), "b": np.zeros(4, np.int64)}) == "all-zero inputs"
    assert degenerate_inputs({"a": np.full((2, 3), 0.5)}) == "constant inputs"
    assert degenerate_inputs({"a": np.full((2, 3), 0.5), "b": np.arange(3)}) == ""
