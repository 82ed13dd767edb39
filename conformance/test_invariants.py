"""Properties the model's outputs must hold for any input, declared as [[invariants]]."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.session import describe_case
from harness.strategies import input_cases


@pytest.mark.gate_check("invariants")
@given(data=st.data())
def test_outputs_hold_the_declared_invariants(gate, ort_runner, data):
    if not gate.config.invariants:
        pytest.skip("no [[invariants]] declared in the config")
    case = data.draw(input_cases(gate.config), label="case")
    outputs = ort_runner.infer(case.materialize(gate.config.inputs))
    for invariant in gate.config.invariants:
        values = outputs[invariant.output].astype(np.float64)
        low = -np.inf if invariant.min is None else invariant.min
        high = np.inf if invariant.max is None else invariant.max
        broken = ~((values >= low) & (values <= high))
        assert not broken.any(), (
            f"{invariant.describe()} is broken by {int(broken.sum())} of {values.size} values "
            f"(e.g. {values[broken][0]:.6g}) on {describe_case(case)}"
        )
