"""Module-level parity in the gate: a module over its own float64 noise while its inputs are within
it blocks, named as `onnx-gate debug` names it, even where the final outputs hide the defect."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import torch

from harness.checks.module_parity import module_cases
from harness.core import config as gate_config
from harness.core.errors import ConfigError
from harness.core.inputs import DEGENERATE_FAMILIES
from harness.core.strategies import FAMILIES
from harness.gate.session import GateSession
from harness.runtime.export import export_onnx
from tests import user_models
from tests.conftest import HERE

ROOT = HERE.parent
TAGGER = """
model = "user_models:argmax_tagger"
outputs = ["tags"]
report_dir = "reports"
[[inputs]]
name = "features"
shape = ["batch", "time", 16]
range = [-2.0, 2.0]
dims = { batch = [1, 4], time = [1, 64] }
"""


def _session(tmp_path: Path, template: str, exporter: str, exported: torch.nn.Module, **changes: object) -> GateSession:
    """A gate over ``exported``'s ONNX file, with the config's own (correct) model as reference."""
    section = {**tomllib.loads(template), "exporter": exporter, **changes}
    path = tmp_path / "model.onnx"
    export_onnx(exported, gate_config.parse(section, tmp_path, search_dirs=(HERE,)), path)
    session = GateSession(gate_config.parse({**section, "onnx": str(path)}, tmp_path, search_dirs=(HERE,)), work_dir=tmp_path)
    session.prepare()
    assert session.artifact is not None, session.artifact_error
    return session


# Where graph fidelity judges the artifact, module parity compares the float64 graph with PyTorch
# float64 (exact); where it cannot (contrib ops), ONNX Runtime fp32 against each module's own noise.
FLOAT64_DEPARTURE = "FAILED | the graph is not the model: the graph departs from the model first in `%s` (%s"
NOISE_CULPRIT = "FAILED | the mismatch starts in `%s` (%s"


def _without_fidelity(session: GateSession) -> GateSession:
    """As for a graph with ops that have no float64 reference: the runtime rule judges alone."""
    session.__dict__["fidelity_judged"] = False
    return session


@pytest.mark.checks
@pytest.mark.parametrize(("exporter", "rule"), [("torchscript", "float64"), ("dynamo", "float64"), ("torchscript", "noise")])
def test_an_argmax_tagger_with_a_half_precision_head_is_blocked_on_every_case_and_the_head_named(exporter, rule, tmp_path):
    """The tags flip on about 2e-4 of the values, so exact comparison catches it by chance; the
    head's logits are about 1,900x their own noise on every input, and far over their float64 bound."""
    session = _session(tmp_path, TAGGER, exporter, user_models.argmax_tagger(head_through_fp16=True))
    if rule == "noise":
        _without_fidelity(session)
    result = session.check_module_parity(root=ROOT)
    assert not result and not result.not_judged and result.rule == rule, str(result)
    assert {c.module for c in result.culprits} == {"head"} and len(result.culprits) == len(result.cases), str(result)
    expected = (FLOAT64_DEPARTURE if rule == "float64" else NOISE_CULPRIT) % ("head", "Linear, user_models.py:")
    assert str(result).startswith(expected), str(result)
    assert all(c.ratio > 100 for c in result.culprits), str(result)
    entry = session.parity_summary()["module_parity"]
    assert entry["status"] == "failed" and entry["culprits"][0]["module"] == "head" and entry["rule"] == rule
    assert entry["cost"]["seconds"] > 0


@pytest.mark.checks
@pytest.mark.parametrize("rule", ["float64", "noise"])
def test_a_correct_tagger_export_passes_with_every_module_judged(rule, tmp_path):
    session = _session(tmp_path, TAGGER, "torchscript", user_models.argmax_tagger())
    if rule == "noise":
        _without_fidelity(session)
    result = session.check_module_parity(root=ROOT)
    assert result and not result.not_judged and result.rule == rule, str(result)
    if rule == "float64":
        assert result.aligned >= 3 and result.worst_ratio < 1, str(result)
        assert str(result).startswith("PASSED | every aligned module's float64 graph value within its fidelity bound on 5 cases")
    else:
        assert result.aligned >= 3 and result.worst_ratio < 16, str(result)
        assert str(result).startswith("PASSED | every aligned module within 16x its own fp32 noise on 5 cases")


@pytest.mark.checks
def test_a_file_without_scope_information_is_said_in_one_line_and_not_judged(tmp_path):
    """An ONNX file made elsewhere, its node names and metadata stripped: nothing ties its values
    to modules. Not a failure; the final outputs are compared as usual."""
    from tests.defects import strip_scopes

    session = _session(tmp_path, TAGGER, "torchscript", user_models.argmax_tagger())
    stripped = strip_scopes(session.artifact.path, tmp_path / "stripped.onnx")
    session = GateSession(
        gate_config.parse({**tomllib.loads(TAGGER), "onnx": str(stripped)}, tmp_path, search_dirs=(HERE,)),
        work_dir=tmp_path / "given",
    )  # fmt: skip
    session.prepare()
    result = session.check_module_parity(root=ROOT)
    assert result and result.not_judged and "\n" not in str(result), str(result)
    assert str(result).startswith("NOT JUDGED | module-level parity: the ONNX file carries no scope information")


def test_the_sample_holds_every_family_but_the_degenerate_ones_and_every_pinned_batch_size(tmp_path):
    config = gate_config.parse(tomllib.loads(TAGGER), tmp_path, search_dirs=(HERE,))
    cases = module_cases(config, "batch", [1, 2, 3])
    assert {case.family for case in cases} == set(FAMILIES) - set(DEGENERATE_FAMILIES)
    assert {case.sizes["batch"] for case in cases} == {1, 2, 3} and len(cases) == 5
    assert all(case.sizes["time"] == config.dims["time"].trace for case in cases)
    many_batches = module_cases(config, "batch", list(range(1, 8)))
    assert len(many_batches) == 7 and {c.sizes["batch"] for c in many_batches} == set(range(1, 8))


@pytest.mark.checks
def test_module_parity_is_a_switch_and_a_skip_is_not_required(tmp_path):
    section = tomllib.loads(TAGGER)
    assert gate_config.parse(section, tmp_path, search_dirs=(HERE,)).module_parity is True
    off = gate_config.parse({**section, "module_parity": False}, tmp_path, search_dirs=(HERE,))
    with pytest.raises(ConfigError, match="module_parity must be bool, got 'off'"):
        gate_config.parse({**section, "module_parity": "off"}, tmp_path, search_dirs=(HERE,))
    session = GateSession(off, work_dir=tmp_path)
    assert "module_parity" in session.required_checks
    session.ledger.collected("module_parity", "test_module_parity")
    session.ledger.reported("module_parity", "test_module_parity", "skipped", "turned off")
    assert "module_parity" not in session.required_checks


# transformers: one Linear deep inside BERT scaled by 1% in the exported copy only.
BERT_DEFECT = "encoder.layer.1.intermediate.dense"


@pytest.mark.checks
@pytest.mark.parametrize("exporter", ["torchscript", pytest.param("dynamo", marks=pytest.mark.slow)])
def test_a_transformers_model_with_one_wrong_weight_is_blocked_and_the_module_named(exporter, tmp_path):
    pytest.importorskip("transformers", reason="library models need transformers (pip install -e .[test])")
    from tests import real_models
    from tests.real_architectures import CONFIGS

    exported = real_models.bert()
    with torch.no_grad():
        exported.get_submodule(BERT_DEFECT).weight.mul_(1.01)
    session = _session(tmp_path, CONFIGS["bert"], exporter, exported)
    result = session.check_module_parity(root=ROOT)
    assert not result, str(result)
    assert {c.module for c in result.culprits} == {BERT_DEFECT}, str(result)
    assert str(result).startswith(FLOAT64_DEPARTURE % (BERT_DEFECT, "Linear, transformers/models/bert/modeling_bert.py:")), str(result)
