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
from harness.core import config as gate_config
from harness.core.strategies import InputCase
from harness.debug import DebugRequest, diagnose
from harness.debug.inputs import parse_case
from harness.debug.report import headline
from harness.models import localization_net
from harness.runtime.export import export_onnx
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


@pytest.mark.checks
def test_a_correct_export_names_no_culprit(exported):
    exporter, path = exported
    result = _debug(exporter, path)
    assert not result.mismatch, headline(result)
    assert result.verdict.culprit is None and result.verdict.suspect is None
    assert result.verdict.rows and not any(row.exceeds for row in result.verdict.rows), headline(result)
    assert headline(result)[0].startswith("PASSED")
    # The exact view agrees: the graph evaluated in float64 is the model, module by module.
    assert result.exact is not None and result.exact.departure() is None and len(result.exact.modules) > 20
    assert any(line.startswith("The graph is the model (exact, in float64)") for line in headline(result))


@pytest.mark.checks
def test_one_weight_scaled_in_a_deep_block_is_named(exported, tmp_path):
    exporter, good = exported
    bad = _edited(good, tmp_path / "weight.onnx", _scale_initializer(f"{DEEP_CONV}.weight", 1.01))
    result = _debug(exporter, bad)
    assert result.verdict.culprit is not None, headline(result)
    assert result.verdict.culprit.module == DEEP_CONV
    assert result.exact is not None and result.exact.departure().module == DEEP_CONV
    exact = f"The graph is not the model (exact, in float64): the graph departs from the model first in `{DEEP_CONV}`"
    assert any(line.startswith(exact) for line in headline(result)), headline(result)
    # Confirmed alone, on PyTorch's own inputs to the module, not only as inherited error.
    assert result.isolation is not None and result.isolation.exceeds, str(result.isolation)
    # Every later module that exceeds either contains the culprit or inherited the error.
    later = [r for r in result.verdict.rows if r.order > result.verdict.culprit.order and r.exceeds]
    unexplained = [
        r.module for r in later if not DEEP_CONV.startswith(r.module + ".") and r.inputs_ok is not False
    ]
    assert later and not unexplained, unexplained


@pytest.mark.checks
@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_an_activation_replaced_by_an_approximation_is_named(exporter, tmp_path):
    bad = _export(exporter, tmp_path / "gelu.onnx", defects.gelu_tanh_in_last_block)
    result = _debug(exporter, bad)
    assert result.verdict.culprit is not None, headline(result)
    assert result.verdict.culprit.module == "backbone.stages.3.blocks.0.act"
    assert result.exact is not None and result.exact.departure().module == "backbone.stages.3.blocks.0.act"


@pytest.mark.checks
def test_a_normalisation_epsilon_changed_in_one_layer_is_named(tmp_path):
    def larger_eps(model) -> None:
        model.backbone.stages[1].blocks[0].norm.eps = 1e-3

    result = _debug("torchscript", _export("torchscript", tmp_path / "eps.onnx", larger_eps))
    assert result.verdict.culprit is not None, headline(result)
    assert result.verdict.culprit.module == "backbone.stages.1.blocks.0.norm"


@pytest.mark.checks
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


@pytest.mark.checks
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


@pytest.mark.checks
def test_the_cli_debugs_the_latest_reports_failing_case_and_writes_a_replay_that_fails(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    good = _export("torchscript", tmp_path / "good.onnx")
    bad = _edited(good, tmp_path / "bad.onnx", _scale_initializer(f"{DEEP_CONV}.weight", 1.01))
    (tmp_path / "gate.toml").write_text(
        SMALL_LOCALIZATION_NET % {"exporter": "torchscript"}, encoding="utf-8"
    )
    run = tmp_path / "reports" / "20260101T000000Z-abcd"
    run.mkdir(parents=True)
    case = {"family": "normal", "sizes": {"batch": 2}, "seed": 1, "magnitude": 1.0, "constant": 0.0,
            "spike_fraction": 0.01, "note": ""}  # fmt: skip
    (run / "gate.json").write_text(
        json.dumps({"parity_failures": ["FAILED | ..."], "parity_failure_case": case})
    )
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


@pytest.mark.checks
def test_the_gate_report_records_the_last_failing_case_for_debug(tmp_path):
    """Hypothesis replays a failing test's shrunk example last: the last failure is the one to debug."""
    from harness.debug.inputs import failing_case
    from harness.gate.session import GateSession
    from harness.report.outcome import build_outcome
    from harness.report.run_report import gate_document

    good = _export("torchscript", tmp_path / "good.onnx")
    bad = _edited(good, tmp_path / "bad.onnx", _scale_initializer(f"{DEEP_CONV}.weight", 1.01))
    section = tomllib.loads(SMALL_LOCALIZATION_NET % {"exporter": "torchscript"}) | {"onnx": str(bad)}
    session = GateSession(gate_config.parse(section, tmp_path, search_dirs=(HERE,)), work_dir=tmp_path)
    session.prepare()
    earlier = InputCase(family="uniform", sizes={"batch": 3}, seed=9)
    assert not session.check_parity(earlier)
    assert not session.check_parity(CASE)

    document = gate_document(build_outcome(session, exit_status=1, hypothesis_profile="smoke"))
    (tmp_path / "gate.json").write_text(json.dumps(document, default=str))
    assert failing_case(tmp_path, session.config) == CASE


def _npz(path: Path, feeds) -> Path:
    np.savez(path, **feeds)
    return path


def _report(reports: Path, run_id: str, case: dict | None) -> Path:
    folder = reports / run_id
    folder.mkdir(parents=True)
    failures = ["FAILED | ..."] if case else []
    document = {"run_id": run_id, "parity_failures": failures, "parity_failure_case": case}
    (folder / "gate.json").write_text(json.dumps(document), encoding="utf-8")
    return folder


def _cli_project(tmp_path: Path, monkeypatch, *, export: bool = True) -> Path:
    """A project folder with gate.toml and, when ``export``, bad.onnx: one deep weight scaled."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gate.toml").write_text(
        SMALL_LOCALIZATION_NET % {"exporter": "torchscript"}, encoding="utf-8"
    )
    if not export:
        return tmp_path / "bad.onnx"  # never read: the command stops before it
    good = _export("torchscript", tmp_path / "good.onnx")
    return _edited(good, tmp_path / "bad.onnx", _scale_initializer(f"{DEEP_CONV}.weight", 1.01))


@pytest.mark.checks
def test_the_cli_debugs_explicit_arrays_from_an_npz_file(tmp_path, monkeypatch, capsys):
    bad = _cli_project(tmp_path, monkeypatch)
    arrays = _npz(tmp_path / "inputs.npz", CASE.materialize(_config("torchscript").inputs))

    status = cli.main(
        ["debug", "--gate-config", "gate.toml", "--gate-onnx", str(bad), "--inputs", str(arrays)]
    )

    out = capsys.readouterr().out
    assert status == 1, out
    assert f"the mismatch starts in `{DEEP_CONV}`" in out
    # No report to write into: a folder of its own, named like a run.
    (written,) = (tmp_path / "reports").glob("*-debug/debug.md")
    assert "Input: arrays from inputs.npz" in written.read_text()


def test_the_cli_refuses_an_npz_file_whose_arrays_are_not_the_models_inputs(tmp_path, monkeypatch, capsys):
    bad = _cli_project(tmp_path, monkeypatch, export=False)
    arrays = _npz(tmp_path / "wrong.npz", {"spectrogram": np.zeros((1, 3, 128, 32), np.float32)})

    status = cli.main(
        ["debug", "--gate-config", "gate.toml", "--gate-onnx", str(bad), "--inputs", str(arrays)]
    )

    assert status == 2
    assert (
        "holds arrays ['spectrogram']; the model's inputs are ['mel_spectrogram']" in capsys.readouterr().err
    )


@pytest.mark.checks
def test_the_cli_debugs_the_failing_case_of_a_named_run_not_the_latest(tmp_path, monkeypatch, capsys):
    bad = _cli_project(tmp_path, monkeypatch)
    reports = tmp_path / "reports"
    case = {"family": "normal", "sizes": {"batch": 2}, "seed": 1}
    named = _report(reports, "20260101T000000Z-aaaa", case)
    latest = _report(reports, "20260102T000000Z-bbbb", None)  # passed: nothing to debug
    (reports / "latest").symlink_to(latest.name, target_is_directory=True)

    status = cli.main(
        ["debug", "--gate-config", "gate.toml", "--gate-onnx", str(bad), "--from-report", "20260101"]
    )

    out = capsys.readouterr().out
    assert status == 1, out
    assert f"the mismatch starts in `{DEEP_CONV}`" in out
    assert (named / "debug.md").is_file() and not (latest / "debug.md").exists()
    assert "Input: normal inputs (batch=2, seed=1)" in (named / "debug.md").read_text()


def test_the_cli_says_which_runs_match_an_ambiguous_or_unknown_run_id(tmp_path, monkeypatch, capsys):
    bad = _cli_project(tmp_path, monkeypatch, export=False)
    for run_id in ("20260101T000000Z-aaaa", "20260101T000000Z-bbbb"):
        _report(tmp_path / "reports", run_id, None)
    options = ["debug", "--gate-config", "gate.toml", "--gate-onnx", str(bad), "--from-report"]

    assert cli.main([*options, "20260101"]) == 2
    assert "--from-report '20260101': 2 runs under" in capsys.readouterr().err
    assert cli.main([*options, "2027"]) == 2
    assert "--from-report '2027': no run under" in capsys.readouterr().err


@pytest.mark.checks
def test_a_model_without_float64_kernels_is_debugged_without_a_noise_floor(tmp_path):
    from tests import user_models
    from tests.conftest import TWO_INPUT_NET

    section = tomllib.loads(TWO_INPUT_NET % {"exporter": "torchscript"})
    config = gate_config.parse(section, HERE, search_dirs=(HERE,))
    good = tmp_path / "good.onnx"
    export_onnx(user_models.float32_only_net(), config, good)
    bad = _edited(good, tmp_path / "bad.onnx", _scale_initializer("conv.weight", 1.01))
    feeds = InputCase(family="normal", sizes={"batch": 2}, seed=1).materialize(config.inputs)

    result = diagnose(
        DebugRequest(config, bad, feeds, "test case", HERE.parent), user_models.float32_only_net()
    )

    assert "not implemented for 'Double'" in result.fp64_unavailable
    assert any("No noise floor: the model cannot run in float64" in line for line in headline(result))
    assert result.exact is None and "the model cannot run in float64" in result.exact_unavailable
    assert any(line.startswith("Graph fidelity (float64): not judged") for line in headline(result))
    # The fixed fallback bound still finds the module; no floor or ratio is claimed for it.
    assert result.verdict.culprit is not None, headline(result)
    assert result.verdict.culprit.module == "conv"
    assert result.verdict.culprit.floor is None and result.verdict.culprit.ratio is None
    assert "no fp64 floor" in " ".join(headline(result))


# --- "Where it diverges" in the gate's own report ----------------------------------------------------


def test_a_gate_run_that_fails_parity_names_the_culprit_in_its_summary(project, tmp_path):
    from tests.conftest import CONFORMANCE

    bad = defects.export_variant(tmp_path / "gelu.onnx", defects.gelu_tanh_in_last_block)
    project.write_config()

    run = project.run("--gate-onnx", str(bad), paths=(f"{CONFORMANCE}/test_parity.py",))

    assert run.status("parity") == "failed"
    divergence = run.document["divergence"]
    assert divergence["status"] == "culprit", divergence
    assert divergence["culprit"]["module"] == "backbone.stages.3.blocks.0.act"
    assert divergence["cost"]["seconds"] > 0 and divergence["limits"]["cases"] == 1
    folder = project.path / "reports" / run.document["run_id"]
    summary = (folder / "summary.md").read_text()
    assert "## Where it diverges" in summary
    assert (
        "the mismatch starts in `backbone.stages.3.blocks.0.act` (GELU, harness/models/convnext.py:"
        in summary
    )
    assert {"debug.md", "culprit.onnx", "test_culprit_replay.py"} <= set(run.document["files"])


def _failed_session(tmp_path: Path, onnx_path: Path):
    from harness.gate.session import GateSession

    section = tomllib.loads(SMALL_LOCALIZATION_NET % {"exporter": "torchscript"}) | {"onnx": str(onnx_path)}
    session = GateSession(gate_config.parse(section, tmp_path, search_dirs=(HERE,)), work_dir=tmp_path)
    session.parity.failure_case = CASE
    return session


@pytest.mark.checks
def test_the_gate_skips_the_section_with_a_reason_when_the_artifact_is_invalid(tmp_path):
    from harness.gate.divergence import summary_section, where_it_diverges

    cut = tmp_path / "cut.onnx"
    cut.write_bytes(b"half of an ONNX file")
    session = _failed_session(tmp_path, cut)
    session.prepare()
    assert session.artifact is None

    entry = where_it_diverges(session, root=tmp_path)

    assert entry["status"] == "skipped" and entry["reason"].startswith("the ONNX artifact is invalid")
    assert "Not computed: the ONNX artifact is invalid" in summary_section(entry, session.run_id)


@pytest.mark.checks
def test_the_gate_skips_the_section_for_a_model_over_the_size_limit(tmp_path, monkeypatch):
    from harness.gate import divergence

    session = _failed_session(tmp_path, _export("torchscript", tmp_path / "good.onnx"))
    session.prepare()
    monkeypatch.setattr(divergence, "MAX_PARAMETERS", 1000)

    entry = divergence.where_it_diverges(session, root=tmp_path)

    assert entry["status"] == "skipped", entry
    assert "parameters, over the in-gate limit of 1,000" in entry["reason"]
    assert entry["cost"]["seconds"] < 5


@pytest.mark.checks
def test_a_debug_failure_in_the_gate_becomes_a_one_line_reason(tmp_path):
    from harness.gate.divergence import where_it_diverges

    path = _export("torchscript", tmp_path / "good.onnx")
    session = _failed_session(tmp_path, path)
    session.prepare()
    path.write_bytes(b"replaced after the checks ran")  # the file debug reads is no longer ONNX

    entry = where_it_diverges(session, root=tmp_path)

    assert entry["status"] == "error", entry
    assert entry["reason"] == "debug failed: ArtifactError: cannot read ONNX file 'good.onnx': DecodeError"


@pytest.mark.checks
@pytest.mark.parametrize("exporter", ["torchscript", pytest.param("dynamo", marks=pytest.mark.slow)])
def test_nan_that_only_onnx_runtime_gives_is_the_divergence_and_never_within(exporter, tmp_path):
    """A stem LayerNorm exported with epsilon 0: on all-zero input (and a stem without bias, as
    timm initialises it) its variance is 0 and ONNX Runtime gives 0/0; PyTorch (epsilon 1e-6) does not."""
    import torch

    def zero_stem_bias(model):
        with torch.no_grad():
            model.backbone.stem[0].bias.zero_()
        return model

    def no_eps(model) -> None:
        zero_stem_bias(model).backbone.stem[1].eps = 0.0

    config = _config(exporter)
    path = _export(exporter, tmp_path / "eps0.onnx", no_eps)
    zeros = InputCase(family="zeros", sizes={"batch": 1}, seed=0).materialize(config.inputs)
    reference = zero_stem_bias(localization_net("test"))
    result = diagnose(DebugRequest(config, path, zeros, "zeros", HERE.parent), reference)
    lines = headline(result)
    assert result.mismatch and not any(result.unoptimised_ok.values()), lines
    assert result.verdict.culprit is not None, lines
    assert result.verdict.culprit.module == "backbone.stem.1", lines
    assert lines[0].startswith("FAILED | the mismatch starts in `backbone.stem.1`"), lines
    assert "NaN/Inf" in lines[0], lines
    assert not any("within" in line and line.startswith("PASSED") for line in lines), lines


def test_a_reports_failing_case_comes_back_with_every_field_it_was_recorded_with(tmp_path):
    """`debug --from-report` read back four fields: a padded case's valid/side or a samples case's
    sample/perturb fell back to their defaults, and debug ran a different input than the one that failed."""
    from dataclasses import fields

    from harness.checks.parity_stats import case_to_dict
    from harness.debug.inputs import CASE_FIELDS, failing_case

    recorded = InputCase(
        family="spikes", sizes={"batch": 3}, seed=7, magnitude=1e4, constant=0.25, spike_fraction=0.05,
        valid="fewest", side="left", dither=0.01, sample=2, perturb="noise",
    )  # fmt: skip
    defaults = InputCase(family="spikes", sizes={"batch": 3})
    assert {f.name for f in fields(InputCase)} - {"family", "sizes", "note"} == set(CASE_FIELDS)
    assert all(getattr(recorded, name) != getattr(defaults, name) for name in CASE_FIELDS)  # each one counts
    (tmp_path / "gate.json").write_text(json.dumps({"parity_failure_case": case_to_dict(recorded)}))
    assert failing_case(tmp_path, config=None) == recorded  # type: ignore[arg-type]
