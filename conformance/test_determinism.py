import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.session import describe_case
from harness.strategies import input_cases


@pytest.mark.gate_check("determinism")
@given(data=st.data())
def test_identical_runs_are_bitwise_equal(gate, ort_runner, data):
    case = data.draw(input_cases(gate.config, families=("normal", "uniform")), label="case")
    feeds = case.materialize(gate.config.inputs)
    first, second = ort_runner.infer(feeds), ort_runner.infer(feeds)
    for name in first:
        assert first[name].tobytes() == second[name].tobytes(), (
            f"{name}: two runs of one ONNX Runtime session differ on {describe_case(case)}"
        )


@pytest.mark.gate_check("determinism")
def test_a_fresh_session_reproduces_the_outputs_bitwise(gate, ort_runner):
    from harness.export import example_feeds

    feeds = example_feeds(gate.config, gate.config.trace_sizes, seed=7)
    with gate.new_ort_runner() as fresh:
        again = fresh.infer(feeds)
    original = ort_runner.infer(feeds)
    for name in original:
        assert original[name].tobytes() == again[name].tobytes(), (
            f"{name}: a second ONNX Runtime session gives different bytes for the same inputs"
        )
