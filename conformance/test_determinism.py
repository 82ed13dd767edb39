import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.checks.determinism import check_fresh_session, check_repeatable
from harness.core.strategies import input_cases


@pytest.mark.gate_check("determinism")
@given(data=st.data())
def test_identical_runs_are_bitwise_equal(gate, ort_runner, data):
    case = data.draw(input_cases(gate.config, families=("normal", "uniform")), label="case")
    result = check_repeatable(case, gate.config, ort_runner)
    assert result, str(result)


@pytest.mark.gate_check("determinism")
def test_a_fresh_session_reproduces_the_outputs_bitwise(gate, ort_runner):
    # The fresh session replaces the first, which is released before it loads: for a model of GBs,
    # two sessions side by side would hold the weights twice more.
    result = check_fresh_session(gate.config, ort_runner, gate.renew_ort_runner)
    assert result, str(result)
