"""Models that carry state across calls ([[state]]): judged as they run, each runtime feeding back
its own state, step by step by parity's rules (harness/checks/rollout.py)."""

import pytest
from hypothesis import given, settings

from harness.checks.rollout import full_rollout, rollout_cases

# Without [[state]] these tests are not collected (harness/plugin/hooks.py); run alone, they say why.
NO_STATE = "no [[state]] declared: the model carries no state across calls"


@pytest.mark.gate_check("rollout")
def test_a_full_length_rollout_stays_within_each_steps_bounds(gate, pytestconfig):
    if not gate.config.rollout.declared:
        pytest.skip(NO_STATE)
    root = pytestconfig.invocation_params.dir
    result = gate.check_rollout(full_rollout(gate.config, gate.batch_dim), root=root, report=True)
    assert result, str(result)


@pytest.mark.gate_check("rollout")
def test_rollouts_from_drawn_prefixes_batches_and_paddings_stay_within_bounds(gate, pytestconfig):
    if not gate.config.rollout.declared:
        pytest.skip(NO_STATE)
    if not gate.config.rollout.examples:
        pytest.skip("rollout.examples = 0 in [tool.onnx-gate]: only the full-length rollout is run")

    # The profile's other settings hold; the number of rollouts is the config's (each is many calls).
    @settings(max_examples=gate.config.rollout.examples)
    @given(rollout=rollout_cases(gate.config, gate.batch_dim))
    def rollout_stays_within_bounds(rollout):
        result = gate.check_rollout(rollout, root=pytestconfig.invocation_params.dir)
        assert result, str(result)

    rollout_stays_within_bounds()
