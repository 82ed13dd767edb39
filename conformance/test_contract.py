import pytest

from harness.checks.contract import check_contract


@pytest.mark.gate_check("contract")
def test_graph_interface_matches_the_config_and_is_inference_only(gate, onnx_artifact, gate_config):
    result = check_contract(onnx_artifact.path, gate_config, model_output_problem=gate.output_name_problem)
    assert result, str(result)
