"""PyTorch eager (CPU, fp32, eval, no grad) against ONNX Runtime CPU, as property tests."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.strategies import input_cases


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
