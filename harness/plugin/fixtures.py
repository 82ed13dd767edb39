"""The gate's fixtures: the session, its config, the ONNX artifact and the runners over it. The conformance
and benchmark tests ask for these by name."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from harness.gate.session import GateSession
from harness.plugin.api_request import gate_of

if TYPE_CHECKING:
    from harness.core.config import GateConfig
    from harness.runtime.export import ArtifactInfo
    from harness.runtime.runners import OrtRunner, TorchRunner


@pytest.fixture(scope="session")
def gate(request: pytest.FixtureRequest) -> GateSession:
    """The gate run: config, model, artifact and the values the checks record."""
    session = gate_of(request.config)
    if session is None:
        pytest.skip("not an onnx-gate session: run `onnx-gate run` or pytest on conformance/")
    return session


@pytest.fixture(scope="session")
def gate_config(gate: GateSession) -> GateConfig:
    return gate.config


@pytest.fixture(scope="session")
def onnx_artifact(gate: GateSession) -> ArtifactInfo:
    """The ONNX file under test; checks that need it skip, saying why, when it is invalid."""
    if gate.artifact is None:
        pytest.skip(f"not run: the ONNX artifact is invalid ({gate.artifact_error})")
    return gate.artifact


class OrtRunnerHandle:
    """The session's current ONNX Runtime runner, looked up at each use: the fixture's cache then
    holds no session, so the gate can release one (a large model's GBs) or renew it."""

    def __init__(self, gate: GateSession) -> None:
        self.gate_of = gate

    def __getattr__(self, name: str) -> Any:
        return getattr(self.gate_of.ort_runner, name)


@pytest.fixture(scope="session")
def ort_runner(gate: GateSession, onnx_artifact: ArtifactInfo) -> OrtRunner:
    gate.ort_runner  # loaded here: an artifact ONNX Runtime cannot load fails at fixture setup
    return OrtRunnerHandle(gate)  # type: ignore[return-value]


@pytest.fixture(scope="session")
def torch_runner(gate: GateSession) -> TorchRunner:
    return gate.torch_runner
