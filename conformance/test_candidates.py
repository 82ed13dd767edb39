"""Candidate artifacts ([candidates] in the config) get the plain export's checks: contract,
parity as property tests, dynamic dims, batch consistency, determinism and invariants, each at the
tolerance its precision calls for (harness/candidates/judge.py). A candidate that fails a check is
blocked and reported as xfail; the gate itself fails only for a candidate named for publishing."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.checks.contract import check_contract
from harness.checks.determinism import check_fresh_session, check_repeatable
from harness.checks.invariants import check_invariants
from harness.core.strategies import InputCase, input_cases


@pytest.fixture(scope="session")
def candidate(gate, onnx_artifact, candidate_name):
    """The candidate's name, once it is built and can be judged."""
    if candidate_name is None:
        pytest.skip("no [candidates] in the config")
    built = gate.candidates.built[candidate_name]
    if not built.built:
        pytest.fail(f"candidate {candidate_name} {built.error}", pytrace=False)
    if gate.candidates.tolerance_kind(candidate_name) == "none":
        pytest.fail(f"candidate {candidate_name} cannot be judged: {gate.candidates.unjudgeable_reason(candidate_name)}",
                    pytrace=False)
    return candidate_name


@pytest.mark.gate_check("candidates")
def test_candidate_keeps_the_graph_interface(gate, candidate):
    result = check_contract(gate.candidates.candidate(candidate).path, gate.config,
                            model_output_problem=gate.output_name_problem)
    assert result, str(result)


@pytest.mark.gate_check("candidates")
@given(data=st.data())
def test_candidate_matches_pytorch_within_its_tolerance(gate, candidate, data):
    families = gate.candidates.parity_families(candidate)
    case = data.draw(input_cases(gate.config, families=families), label="case")
    result = gate.candidates.judge_parity(candidate, case)
    assert result, str(result)


@pytest.mark.gate_check("candidates")
@pytest.mark.parametrize("which", [0, 1], ids=["first-family", "second-family"])
def test_candidate_runs_at_sizes_besides_the_trace_size(gate, candidate, which):
    if not gate.config.dims:
        pytest.skip("the config declares no symbolic dimension")
    # The families its parity is judged on: under a task budget, your samples (or the in-range
    # families without samples), never stress inputs.
    families = gate.candidates.parity_families(candidate)
    if which >= len(families):
        pytest.skip(f"this candidate's parity is judged on {', '.join(families)} only")
    family = families[which]
    for name, dim in gate.config.dims.items():
        for size in dim.sizes_besides_trace(3):
            case = InputCase(family=family, sizes={**gate.config.trace_sizes, name: size}, seed=size)
            result = gate.candidates.judge_parity(candidate, case)
            assert result, str(result)


@pytest.mark.gate_check("candidates")
@given(data=st.data())
def test_candidate_batch_gives_the_outputs_of_its_parts(gate, candidate, data):
    batch_dim = gate.batch_dim
    if batch_dim is None or gate.config.dims[batch_dim].high < 2:
        pytest.skip("no batch dimension that allows a batch of 2 or more")
    dim = gate.config.dims[batch_dim]
    size = data.draw(st.integers(max(2, dim.low), dim.high), label="batch")
    split = data.draw(st.integers(1, size - 1), label="split")
    if split < dim.low or size - split < dim.low:
        pytest.skip(f"parts smaller than the declared minimum batch {dim.low}")
    # Under a task budget, on the families its parity is judged on (a pitch error on spikes says nothing).
    families = ("normal", "uniform", "spikes")
    if gate.candidates.tolerance_kind(candidate) == "budget":
        families = gate.candidates.parity_families(candidate)
    case = data.draw(input_cases(gate.config, pinned={batch_dim: size}, families=families))
    result = gate.candidates.judge_batch_consistency(candidate, case, batch_dim=batch_dim, split=split)
    assert result, str(result)


@pytest.mark.gate_check("candidates")
def test_candidate_is_deterministic(gate, candidate):
    runner = gate.candidates.runner(candidate)
    case = InputCase(family="normal", sizes=gate.config.trace_sizes, seed=3)
    repeated = check_repeatable(case, gate.config, runner)
    assert repeated, str(repeated)
    with gate.candidates.new_runner(candidate) as fresh:
        again = check_fresh_session(gate.config, runner, fresh)
    assert again, str(again)


@pytest.mark.gate_check("candidates")
@given(data=st.data())
def test_candidate_holds_the_declared_invariants(gate, candidate, data):
    if not gate.config.invariants:
        pytest.skip("no [[invariants]] declared in the config")
    case = data.draw(input_cases(gate.config), label="case")
    result = check_invariants(case, gate.config, gate.candidates.runner(candidate))
    assert result, str(result)
