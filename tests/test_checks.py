"""Each check is a plain function returning a result value: no pytest, no gate session, just a
tiny model exported to a temporary folder and the runners over it."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import torch

from harness.checks.batch_consistency import check_batch_consistency
from harness.checks.determinism import check_fresh_session, check_repeatable
from harness.checks.invariants import check_invariants
from harness.checks.parity import check_parity
from harness.core import config as gate_config
from harness.core.strategies import InputCase
from harness.runtime.export import export_onnx
from harness.runtime.runners import OrtRunner, TorchRunner
from tests.conftest import HERE, TWO_INPUT_NET
from tests.user_models import two_input_net

CASE = InputCase(family="normal", sizes={"batch": 4}, seed=3)
INVARIANT = '\n[[invariants]]\noutput = "estimate"\nmin = 100.0\n'


class BatchCoupled(torch.nn.Module):
    """Subtracts the batch mean: each sample's output depends on the others in its batch."""

    def __init__(self) -> None:
        super().__init__()
        self.net = two_input_net()

    def forward(self, spectrum: torch.Tensor, receivers: torch.Tensor) -> torch.Tensor:
        out = self.net(spectrum, receivers)
        return out - out.mean(dim=0, keepdim=True)


def _config(tmp_path: Path, extra: str = "") -> gate_config.GateConfig:
    section = tomllib.loads(TWO_INPUT_NET % {"exporter": "torchscript"} + extra)
    return gate_config.parse(section, tmp_path, search_dirs=(HERE,))


def _runners(tmp_path: Path, config: gate_config.GateConfig, model: torch.nn.Module) -> tuple[TorchRunner, OrtRunner]:
    path = tmp_path / "model.onnx"
    export_onnx(model, config, path)
    names = [spec.name for spec in config.inputs], list(config.outputs)
    return TorchRunner(model, *names), OrtRunner(path, *names)


@pytest.fixture
def config(tmp_path):
    return _config(tmp_path)


@pytest.mark.checks
def test_parity_passes_on_a_faithful_export(tmp_path, config):
    model = two_input_net()
    torch_runner, ort_runner = _runners(tmp_path, config, model)
    fp64 = TorchRunner(model, [s.name for s in config.inputs], list(config.outputs), dtype="float64")
    result = check_parity(CASE, config, torch_runner, ort_runner, fp64_reference=fp64.infer)
    assert result, str(result)
    assert result.noise, "the fp64 reference was given, so the noise check ran"


def test_batch_consistency_passes_when_samples_are_independent(tmp_path, config):
    _, runner = _runners(tmp_path, config, two_input_net())
    result = check_batch_consistency(CASE, config, runner, batch_dim="batch", split=1)
    assert result, str(result)


def test_batch_consistency_fails_when_the_graph_couples_samples(tmp_path, config):
    _, runner = _runners(tmp_path, config, BatchCoupled().eval())
    result = check_batch_consistency(CASE, config, runner, batch_dim="batch", split=1)
    assert not result
    assert str(result).startswith("FAILED | ") and "parts 1+3" in str(result)


@pytest.mark.checks
def test_determinism_passes_for_one_session_and_for_a_fresh_one(tmp_path, config):
    _, runner = _runners(tmp_path, config, two_input_net())
    repeated = check_repeatable(CASE, config, runner)
    assert repeated, str(repeated)
    assert str(repeated).startswith("PASSED | determinism")
    with OrtRunner(tmp_path / "model.onnx", [s.name for s in config.inputs], list(config.outputs)) as fresh:
        reproduced = check_fresh_session(config, runner, fresh)
    assert reproduced, str(reproduced)


def test_invariants_fail_when_the_outputs_break_one(tmp_path):
    config = _config(tmp_path, INVARIANT)
    _, runner = _runners(tmp_path, config, two_input_net())
    result = check_invariants(CASE, config, runner)
    assert not result
    assert str(result).startswith("FAILED | invariants: ") and "is broken by" in str(result)
    assert "normal inputs (batch=4, seed=3)" in str(result)


def test_invariants_pass_when_none_is_broken(tmp_path):
    config = _config(tmp_path, '\n[[invariants]]\noutput = "estimate"\nmin = -1e6\nmax = 1e6\n')
    _, runner = _runners(tmp_path, config, two_input_net())
    result = check_invariants(CASE, config, runner)
    assert result, str(result)
