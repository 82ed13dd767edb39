"""PyTorch eager (CPU, fp32, eval, no grad) against ONNX Runtime CPU, as property tests."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.core.strategies import input_cases


@pytest.mark.gate_check("parity")
@given(data=st.data())
def test_onnx_matches_pytorch_at_pinned_batch_sizes(gate, ort_runner, pinned_batch, data):
    case = data.draw(input_cases(gate.config, pinned={gate.batch_dim: pinned_batch}), label="case")
    result = gate.check_parity(case)
    assert result, str(result)


@pytest.mark.gate_check("parity")
@given(data=st.data())
def test_onnx_matches_pytorch_at_drawn_sizes(gate, ort_runner, data):
    case = data.draw(input_cases(gate.config), label="case")
    result = gate.check_parity(case)
    assert result, str(result)


@pytest.mark.gate_check("parity")
def test_onnx_has_no_systematic_error_against_float64(gate, ort_runner):
    """Errors within the per-value noise bound, but all of one sign and size: a wrong constant,
    an epsilon, a scale of a few ppm, an fp16 intermediate (harness/checks/bias.py)."""
    results = gate.check_bias()
    if results is None:
        pytest.skip(f"no float64 reference ({gate.parity.fp64_unavailable or 'noise_factor = 0'})")
    failed = [result for result in results if not result]
    assert not failed, "\n".join(str(result) for result in failed)
