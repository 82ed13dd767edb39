import pytest

from harness.runtime.artifact_files import rehash


@pytest.mark.gate_check("artifact")
def test_artifact_loads_and_passes_the_onnx_checker(gate):
    if gate.artifact is None:
        pytest.fail(str(gate.artifact_error), pytrace=False)
    # The bytes checked are the bytes that will ship: nothing rewrote any of its files since.
    assert rehash(gate.artifact.path, gate.artifact.files).identity == gate.artifact.sha256
    assert gate.ort_runner.graph_outputs, "ONNX Runtime loaded a graph without outputs"
