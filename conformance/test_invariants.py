"""Properties the model's outputs must hold for any input, declared as [[invariants]]."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.checks.invariants import check_invariants
from harness.core.strategies import input_cases


@pytest.mark.gate_check("invariants")
@given(data=st.data())
def test_outputs_hold_the_declared_invariants(gate, ort_runner, data):
    if not gate.config.invariants:
        pytest.skip("no [[invariants]] declared in the config")
    case = data.draw(input_cases(gate.config), label="case")
    result = check_invariants(case, gate.config, ort_runner)
    assert result, str(result)
