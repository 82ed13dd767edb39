"""--gate-baseline: the candidate timed against the registered production model in the same session
(rounds alternating), its output drift reported, against the real local SeaweedFS + MLflow stack."""

import json
from pathlib import Path

import mlflow  # noqa: F401  (imported here, not first inside a pytester test: see tests/test_publish.py)
import pytest

from harness.bench.baseline import baseline_markdown, slowdown_budget
from harness.core.baseline_spec import parse_spec
from harness.core.errors import GateError
from harness.publish import flow
from harness.publish.baseline_source import fetch
from tests.conftest import BENCHMARKS
from tests.test_publish import _artifact, _request, _unique


def test_a_gate_against_a_registered_baseline_reports_the_latency_ratio_with_its_interval_and_the_drift(
        project, stack, monkeypatch, tmp_path):
    _, env = stack
    name = _unique("baseline")
    assert flow.publish_file(_request(_artifact(tmp_path, 3), name), env)  # production: other weights
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    project.write_config(extra="\n[bench]\nbatches = [1, 2]\n[budget]\nmax_slowdown_vs_baseline = 2.0\n")
    # Only the baseline check: the rest of the gate is tested elsewhere (the verdict says what did not run).
    run = project.run("--gate-bench-quick", f"--gate-baseline=models:/{name}@staging",
                      paths=(f"{BENCHMARKS}/test_baseline.py",))
    assert run.status("baseline") == "passed", run.result.stdout.str()
    assert "baseline" in run.document["required_checks"]
    section = run.document["baseline"]
    assert section["baseline"] == f"models:/{name} version 1 (alias staging)"
    assert [row["batch"] for row in section["latency"]] == [1, 2]
    for row in section["latency"]:
        assert row["ratio_low"] <= row["ratio"] <= row["ratio_high"] and 0.2 < row["ratio"] < 5, row
        assert row["rounds"] >= 5 and row["candidate_ms"] > 0 and row["production_ms"] > 0
    for output in ("positions", "uncertainties"):  # different weights: the outputs drift
        assert 0 < section["drift"][output]["mean_abs"] <= section["drift"][output]["max_abs"]
    assert section["budget"].startswith("PASSED | max_slowdown_vs_baseline 2: ")
    summary = (project.path / "reports" / run.document["run_id"] / "summary.md").read_text()
    assert "## Against production" in summary and f"Baseline: models:/{name} version 1 (alias staging)" in summary
    assert env["AWS_SECRET_ACCESS_KEY"] not in summary + json.dumps(run.document)


def test_a_missing_baseline_is_a_first_release_stated_not_an_error(stack, monkeypatch, tmp_path):
    _, env = stack
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"])
    missing = fetch(parse_spec("models:/never-registered@staging", tmp_path), tmp_path)
    assert missing.path is None and "has no models:/never-registered@staging" in missing.missing
    text = baseline_markdown({"missing": missing.missing})
    assert "No baseline: the registry at http://127.0.0.1:" in text and "Nothing was compared" in text


def test_an_unreachable_registry_is_one_line_naming_the_uri_without_credentials(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://gate:s3cret-pw@127.0.0.1:9")
    with pytest.raises(GateError) as excinfo:
        fetch(parse_spec("models:/heimdall-localization-onnx@staging", tmp_path), tmp_path)
    message = str(excinfo.value)
    assert message.startswith("baseline models:/heimdall-localization-onnx@staging: MLflow tracking server at "
                              "http://127.0.0.1:9 is unreachable")
    assert "s3cret" not in message and "\n" not in message


def test_a_gate_whose_baseline_registry_is_down_stops_at_once_with_that_one_line(project, monkeypatch):
    project.write_config()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://gate:s3cret-pw@127.0.0.1:9")
    run = project.run("--gate-baseline=models:/heimdall-localization-onnx@staging")
    assert run.result.ret == pytest.ExitCode.USAGE_ERROR and run.document is None  # before any export
    run.result.stderr.fnmatch_lines(["*onnx-gate: baseline models:/heimdall-localization-onnx@staging: MLflow tracking "
                                     "server at http://127.0.0.1:9 is unreachable (*)"])
    assert "s3cret" not in run.result.stdout.str() + run.result.stderr.str()


@pytest.mark.parametrize("spec, message", [
    ("models:/name@", "is not models:/NAME@ALIAS or models:/NAME/VERSION"),
    ("models:/name/latest", "is not models:/NAME@ALIAS or models:/NAME/VERSION"),
    ("no-such-file.onnx", "is neither models:/NAME@ALIAS, models:/NAME/VERSION nor an existing ONNX file"),
])
def test_a_malformed_baseline_names_the_forms_it_takes(spec, message, tmp_path):
    with pytest.raises(GateError, match=message.replace("/", "/").replace(".", r"\.")):
        parse_spec(spec, tmp_path)


def test_a_file_baseline_is_read_as_it_is(tmp_path):
    path = tmp_path / "prod.onnx"
    path.write_bytes(b"not read yet")
    fetched = fetch(parse_spec("prod.onnx", tmp_path), tmp_path / "scratch")
    assert fetched.path == Path(path) and fetched.described == "prod.onnx"


def test_the_slowdown_budget_fails_naming_the_batch_its_ratio_interval_and_the_limit():
    rows = [{"batch": 1, "ratio": 1.04, "ratio_low": 0.98, "ratio_high": 1.10},
            {"batch": 8, "ratio": 1.31, "ratio_low": 1.22, "ratio_high": 1.40}]
    assert slowdown_budget(rows, None) is None  # not set in config: not judged
    assert slowdown_budget(rows, 0.5).startswith("PASSED | max_slowdown_vs_baseline 0.5: no batch slower than 1.50x")
    assert slowdown_budget(rows, 0.1) == ("FAILED | max_slowdown_vs_baseline 0.1: batch 8: candidate is 1.310x "
                                          "production (interval [1.220, 1.400]), more than the allowed 1.10x")
