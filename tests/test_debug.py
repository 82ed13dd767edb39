"""`onnx-gate debug` names the module a defect lives in, for defects of our own making."""

from __future__ import annotations

import importlib.util
import json
import tomllib
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from harness import cli
from harness import config as gate_config
from harness.debug import DebugRequest, diagnose
from harness.debug.inputs import parse_case
from harness.debug.report import headline
from harness.export import export_onnx
from harness.models import localization_net
from harness.strategies import InputCase
from tests import defects
from tests.conftest import HERE, SMALL_LOCALIZATION_NET

CASE = InputCase(family="normal", sizes={"batch": 2}, seed=1)
DEEP_CONV = "backbone.stages.2.blocks.0.conv_dw"


def _config(exporter: str) -> gate_config.GateConfig:
    section = tomllib.loads(SMALL_LOCALIZATION_NET % {"exporter": exporter})
    return gate_config.parse(section, HERE, search_dirs=(HERE,))


def _export(exporter: str, path: Path, edit=None) -> Path:
    model = localization_net("test")
    if edit is not None:
        edit(model)
    export_onnx(model, _config(exporter), path)
    return path


def _debug(exporter: str, onnx_path: Path):
    config = _config(exporter)
    request = DebugRequest(config, onnx_path, CASE.materialize(config.inputs), "test case", HERE.parent)
    return diagnose(request, localization_net("test"))


def _edited(source: Path, target: Path, edit) -> Path:
    model = onnx.load(str(source))
    edit(model)
    onnx.save(model, str(target))
    return target


def _scale_initializer(name: str, factor: float):
    def edit(model: onnx.ModelProto) -> None:
        weight = next(init for init in model.graph.initializer if init.name == name)
        weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * np.float32(factor), name))

    return edit


@pytest.fixture(scope="module", params=["torchscript", "dynamo"])
def exported(request, tmp_path_factory) -> tuple[str, Path]:
    folder = tmp_path_factory.mktemp(request.param)
    return request.param, _export(request.param, folder / "good.onnx")


def test_a_correct_export_names_no_culprit(exported):
    exporter, path = exported
    result = _debug(exporter, path)
    assert not result.mismatch, headline(result)
    assert result.verdict.culprit is None and result.verdict.suspect is None
    assert result.verdict.rows and not any(row.exceeds for row in result.verdict.rows), headline(result)
    assert headline(result)[0].startswith("PASSED")


def test_one_weight_scaled_in_a_deep_block_is_named(exported, tmp_path):
    exporter, good = exported
    bad = _edited(good, tmp_path / "weight.onnx", _scale_initializer(f"{DEEP_CONV}.weight", 1.01))
    result = _debug(exporter, bad)
    assert result.verdict.culprit is not None, headline(result)
    assert result.verdict.culprit.module == DEEP_CONV
    # Confirmed alone, on PyTorch's own inputs to the module, not only as inherited error.
    assert result.isolation is not None and result.isolation.exceeds, str(result.isolation)
    # Every later module that exceeds either contains the culprit or inherited the error.
    later = [r for r in result.verdict.rows if r.order > result.verdict.culprit.order and r.exceeds]
    unexplained = [r.module for r in later if not DEEP_CONV.startswith(r.module + ".") and r.inputs_ok is not False]
    assert later and not unexplained, unexplained


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_an_activation_replaced_by_an_approximation_is_named(exporter, tmp_path):
    bad = _export(exporter, tmp_path / "gelu.onnx", defects.gelu_tanh_in_last_block)
    result = _debug(exporter, bad)
    assert result.verdict.culprit is not None, headline(result)
    assert result.verdict.culprit.module == "backbone.stages.3.blocks.0.act"


def test_a_normalisation_epsilon_changed_in_one_layer_is_named(tmp_path):
    def larger_eps(model) -> None:
        model.backbone.stages[1].blocks[0].norm.eps = 1e-3

    result = _debug("torchscript", _export("torchscript", tmp_path / "eps.onnx", larger_eps))
    assert result.verdict.culprit is not None, headline(result)
    assert result.verdict.culprit.module == "backbone.stages.1.blocks.0.norm"


def test_a_constant_edited_in_the_onnx_graph_is_named(tmp_path):
    _, good = "torchscript", _export("torchscript", tmp_path / "good.onnx")
    scope = "/backbone/stages/stages.1/blocks/blocks.0/act/"

    def edit(model: onnx.ModelProto) -> None:
        # GELU's x / sqrt(2): a constant nudged by 1e-3 inside one block's activation.
        node = next(n for n in model.graph.node if n.name.startswith(scope) and n.op_type == "Constant"
                    and abs(float(numpy_helper.to_array(n.attribute[0].t)) - 2**0.5) < 1e-6)  # fmt: skip
        node.attribute[0].t.CopyFrom(numpy_helper.from_array(np.array(2**0.5 + 1e-3, np.float32)))

    result = _debug("torchscript", _edited(good, tmp_path / "constant.onnx", edit))
    assert result.verdict.culprit is not None, headline(result)
    assert result.verdict.culprit.module == "backbone.stages.1.blocks.0.act"


def test_a_file_without_scope_information_gets_a_clear_statement_and_no_culprit(tmp_path):
    good = _export("torchscript", tmp_path / "good.onnx")

    def strip(model: onnx.ModelProto) -> None:
        _scale_initializer(f"{DEEP_CONV}.weight", 1.01)(model)
        for index, node in enumerate(model.graph.node):
            node.name = f"n{index}"
            del node.metadata_props[:]

    result = _debug("torchscript", _edited(good, tmp_path / "anonymous.onnx", strip))
    assert result.alignment.scheme == "none"
    assert result.verdict.culprit is None and not result.verdict.rows
    assert result.mismatch  # the final outputs are still compared
    assert "no scope information" in headline(result)[0]
    assert len(result.alignment.unaligned) == result.named_modules


def test_the_cli_debugs_the_latest_reports_failing_case_and_writes_a_replay_that_fails(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    good = _export("torchscript", tmp_path / "good.onnx")
    bad = _edited(good, tmp_path / "bad.onnx", _scale_initializer(f"{DEEP_CONV}.weight", 1.01))
    (tmp_path / "gate.toml").write_text(SMALL_LOCALIZATION_NET % {"exporter": "torchscript"}, encoding="utf-8")
    run = tmp_path / "reports" / "20260101T000000Z-abcd"
    run.mkdir(parents=True)
    case = {"family": "normal", "sizes": {"batch": 2}, "seed": 1, "magnitude": 1.0, "constant": 0.0,
            "spike_fraction": 0.01, "note": ""}  # fmt: skip
    (run / "gate.json").write_text(json.dumps({"parity_failures": ["FAILED | ..."], "parity_failure_case": case}))
    (tmp_path / "reports" / "latest").symlink_to(run.name, target_is_directory=True)

    status = cli.main(["debug", "--gate-config", "gate.toml", "--gate-onnx", str(bad)])

    out = capsys.readouterr().out
    assert status == 1, out
    assert f"the mismatch starts in `{DEEP_CONV}`" in out
    assert str(tmp_path) not in out.split("report:")[0]  # sources are relative, never absolute
    assert {"debug.md", "debug.png", "culprit.onnx", "culprit_inputs.npz", "test_culprit_replay.py"} <= {
        p.name for p in run.iterdir()
    }
    spec = importlib.util.spec_from_file_location("replay", run / "test_culprit_replay.py")
    replay = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(replay)
    test = next(getattr(replay, name) for name in dir(replay) if name.startswith("test_"))
    with pytest.raises(AssertionError, match="x PyTorch's own fp32 error"):
        test()


def test_a_case_parses_from_the_form_the_gate_prints_it():
    config = _config("torchscript")
    assert parse_case("normal inputs (batch=3, seed=5)", config) == InputCase("normal", {"batch": 3}, seed=5)
    assert parse_case("large batch=1 seed=2 magnitude=1000", config) == InputCase(
        "large", {"batch": 1}, seed=2, magnitude=1000.0
    )
    with pytest.raises(Exception, match="unknown key 'colour'"):
        parse_case("normal colour=3", config)
    with pytest.raises(Exception, match="outside its range"):
        parse_case("zeros batch=99", config)


def test_the_gate_report_records_the_first_failing_case_for_debug(tmp_path):
    from harness.debug.inputs import failing_case
    from harness.ledger import Verdict
    from harness.report import gate_document
    from harness.session import GateSession

    good = _export("torchscript", tmp_path / "good.onnx")
    bad = _edited(good, tmp_path / "bad.onnx", _scale_initializer(f"{DEEP_CONV}.weight", 1.01))
    section = tomllib.loads(SMALL_LOCALIZATION_NET % {"exporter": "torchscript"}) | {"onnx": str(bad)}
    session = GateSession(gate_config.parse(section, tmp_path, search_dirs=(HERE,)), work_dir=tmp_path)
    session.prepare()
    large = InputCase(family="large", sizes={"batch": 3}, seed=9, magnitude=100.0)
    assert not session.check_parity(large)
    session.check_parity(CASE)

    document = gate_document(session, Verdict(False, ("parity",)), hypothesis_profile="smoke")
    (tmp_path / "gate.json").write_text(json.dumps(document, default=str))
    assert failing_case(tmp_path, session.config) == large
