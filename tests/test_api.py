"""export_and_register_model: the training script's entry point runs the same gate in-process,
for a model object that is its own model, and leaves the caller's process as it was."""

import logging
import os
import random
import sys
import tomllib
import uuid
import warnings

import mlflow
import numpy as np
import pytest
import torch
from hypothesis import settings
from mlflow import MlflowClient
from torch import nn

from harness import export_and_register_model
from harness.models import localization_net
from tests.conftest import SMALL_LOCALIZATION_NET

# smoke: derandomized, so every run of these gates draws the same cases (dev draws at random).
FAST = ["--gate-bench-quick", "--hypothesis-profile=smoke", "-q", "-p", "no:cacheprovider"]
# What a training script writes for its own model: no pyproject.toml, only these overrides.
SEQUENTIAL_IO = {
    "inputs": [{"name": "features", "shape": ["batch", 6], "dtype": "float32", "range": [-2.0, 2.0],
                "dims": {"batch": [1, 4]}}],
    "outputs": ["scores"],
    "bench": {"batches": [1, 2]}, "budget": {"min_speedup": 0},
}  # fmt: skip


def _overrides(tmp_path, **extra):
    section = tomllib.loads(SMALL_LOCALIZATION_NET % {"exporter": "torchscript"})
    section.pop("model_kwargs")
    return {**section, "report_dir": str(tmp_path / "reports"), "bench": {"batches": [1, 2]}, "budget": {"min_speedup": 0}, **extra}


def _sequential() -> nn.Module:
    torch.manual_seed(7)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))


class _ExportDefect(nn.Module):
    """A model whose exported graph is not the model: the export takes another branch."""

    def __init__(self) -> None:
        super().__init__()
        self.body = _sequential()

    def forward(self, features):
        scores = self.body(features)
        return scores * 1.001 if torch.onnx.is_in_onnx_export() else scores


def _process_state(model: nn.Module) -> dict:
    """The caller's state as a training script could observe it, taken independently of the
    gate's own snapshot (harness/core/caller_state.py)."""
    current = settings()
    loggers = {"": logging.getLogger(), **{n: lg for n, lg in logging.Logger.manager.loggerDict.items() if isinstance(lg, logging.Logger)}}
    return {
        "hypothesis": (current.max_examples, current.deadline, current.derandomize, repr(current.database)),
        "hypothesis_profile": settings._current_profile,
        "loggers": {n: (lg.level, lg.disabled, lg.propagate, tuple(lg.handlers), tuple(lg.filters)) for n, lg in loggers.items()},
        "logging_disable": logging.root.manager.disable,
        "torch_threads": torch.get_num_threads(),
        "torch_dtype": torch.get_default_dtype(),
        "grad": torch.is_grad_enabled(),
        "torch_random": torch.get_rng_state().numpy().tobytes(),
        "numpy_random": np.random.get_state()[1].tobytes(),
        "python_random": random.getstate(),
        "warnings": list(warnings.filters),
        "cwd": os.getcwd(),
        "environ": dict(os.environ),
        "sys_path": list(sys.path),
        "training": [m.training for m in model.modules()],
        "mlflow_tracking_uri": mlflow.get_tracking_uri(),
        "mlflow_run": (mlflow.active_run().info.run_id if mlflow.active_run() else None),
        "streams": (sys.stdout, sys.stderr),
    }


def _changed(before: dict, after: dict) -> list[str]:
    changed = [key for key in before if key != "loggers" and before[key] != after[key]]
    # Loggers a library creates on import during the call have no earlier state to compare.
    changed += [f"logger {n!r}" for n, state in before["loggers"].items() if after["loggers"].get(n) != state]
    return changed


class _TrainingLog(logging.Handler):
    """The training job's own handler on the root logger, INFO and up."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def gate_lines(self) -> list[str]:
        return [r.getMessage() for r in self.records if r.name == "onnx_gate"]


@pytest.fixture
def training_log(monkeypatch):
    handler, root = _TrainingLog(), logging.getLogger()
    monkeypatch.setattr(root, "level", logging.INFO)
    root.addHandler(handler)
    yield handler
    root.removeHandler(handler)


def test_a_training_script_gates_its_model_object_and_the_version_links_to_its_run(
    stack, tmp_path, monkeypatch, capsys, training_log
):
    _, env = stack
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)  # no pyproject.toml: the overrides describe the model
    name = f"trainer-{uuid.uuid4().hex[:8]}"
    model = _sequential().train()  # mid-training: it must stay in train mode
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    mlflow.set_experiment(f"training-{name}")
    with mlflow.start_run() as training_run:
        before = _process_state(model)
        result = export_and_register_model(
            model, config_overrides={**SEQUENTIAL_IO, "report_dir": "reports", "publish": {"model_name": name}},
            pytest_args=FAST,
        )  # fmt: skip
        after = _process_state(model)
        printed = capsys.readouterr().out  # before MLflow prints its own "View run" for the training run
    assert result.success, result.reason
    assert _changed(before, after) == []
    assert printed == ""  # pytest's output went to the report folder
    assert (result.report_path.parent / "pytest.log").is_file()
    lines = training_log.gate_lines()
    assert 4 <= len(lines) <= 6 and lines[0].startswith("onnx-gate export:"), lines
    assert lines[-1].startswith("onnx-gate verdict: PASSED"), lines

    assert (result.registered_name, result.version, result.alias) == (name, "1", "staging")
    assert result.s3_uri.endswith(f"{result.sha256}.onnx")
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    versions = client.search_model_versions(f"run_id='{training_run.info.run_id}'")
    assert [(v.name, v.version) for v in versions] == [(name, result.version)]
    assert versions[0].tags["model_callable"].endswith("torch.nn.modules.container:Sequential")
    run = client.get_run(training_run.info.run_id)
    assert run.data.tags["onnx_gate.verdict"] == "passed"
    assert run.data.tags["onnx_gate.registered_model"] == f"{name}/{result.version}"
    assert run.data.metrics["onnx_gate.passed"] == 1.0 and "onnx_gate.fidelity_ratio" in run.data.metrics
    assert {a.path for a in client.list_artifacts(training_run.info.run_id, "onnx-gate")} >= {
        "onnx-gate/gate.json", "onnx-gate/summary.md", "onnx-gate/pytest.log"
    }


@pytest.mark.checks
def test_a_model_object_whose_export_is_not_the_model_fails_in_one_line_and_leaves_the_caller_as_it_was(
    tmp_path, monkeypatch, capsys, training_log
):
    monkeypatch.chdir(tmp_path)
    model = _ExportDefect()
    before = _process_state(model)
    result = export_and_register_model(
        model, config_overrides={**SEQUENTIAL_IO, "exporter": "torchscript", "report_dir": "reports"},
        publish=False, pytest_args=FAST,
    )  # fmt: skip
    assert _changed(before, _process_state(model)) == []
    assert not result.success and result.verdict == "failed"
    assert "\n" not in result.reason and "parity failed" in result.reason
    assert capsys.readouterr().out == ""
    lines = training_log.gate_lines()
    assert len(lines) <= 6 and lines[-1].startswith("onnx-gate verdict: FAILED"), lines
    assert any(r.levelno == logging.WARNING and r.getMessage().startswith("onnx-gate checks:") for r in training_log.records)


@pytest.mark.checks
def test_a_model_object_without_inputs_gets_one_line_naming_what_to_add(tmp_path, monkeypatch, training_log):
    monkeypatch.chdir(tmp_path)
    result = export_and_register_model(_sequential(), config_overrides={"outputs": ["scores"]}, publish=False, pytest_args=FAST)
    assert not result.success
    assert "torch.nn.modules.container:Sequential" in result.reason and "inputs = [...]" in result.reason
    assert "uncertainties" not in result.reason  # the built-in model's settings stay with the built-in model


def test_a_run_id_that_names_no_run_is_refused_before_the_gate_runs(stack, tmp_path, monkeypatch):
    _, env = stack
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"])
    result = export_and_register_model(_sequential(), "no-such-run", config_overrides=SEQUENTIAL_IO, pytest_args=FAST)
    assert not result.success and result.exit_code == pytest.ExitCode.USAGE_ERROR
    assert "run_id 'no-such-run' is not a run" in result.reason


@pytest.mark.checks
def test_a_localization_net_object_is_gated_with_the_config_that_names_the_built_in_model(tmp_path):
    result = export_and_register_model(localization_net("test", seed=3), config_overrides=_overrides(tmp_path),
                                       publish=False, pytest_args=FAST)  # fmt: skip
    assert result.success, result.reason
    assert result.parity["examples"] > 0 and {r["backend"] for r in result.latency} == {"pytorch", "onnxruntime"}
    assert result.report_path.is_file() and result.publish is None


@pytest.mark.checks
def test_a_failing_gate_returns_the_reason_instead_of_raising(tmp_path):
    broken_invariant = [{"output": "uncertainties", "min": 0.9}]  # seeded uncertainties are ~0.3-0.7
    result = export_and_register_model(
        localization_net("test"), config_overrides=_overrides(tmp_path, invariants=broken_invariant),
        publish=False, pytest_args=[*FAST, "-k", "invariants"],  # narrowed to the check asserted
    )  # fmt: skip
    assert not result.success and result.verdict == "failed"
    assert "invariants failed" in result.reason
    assert result.exit_code == 1


@pytest.mark.checks
def test_a_transformers_model_object_in_train_mode_is_gated_and_handed_back_in_train_mode(tmp_path, monkeypatch, training_log):
    from tests.real_architectures import CONFIGS
    from tests.real_models import bert

    monkeypatch.chdir(tmp_path)
    description = tomllib.loads(CONFIGS["bert"])
    description.pop("model")  # the object is the model; the config only describes its inputs and outputs
    model = bert().train()  # dropout on, as a training loop leaves it
    before = _process_state(model)
    result = export_and_register_model(
        model, config_overrides={**description, "report_dir": "reports", "bench": {"batches": [1]}, "budget": {"min_speedup": 0}},
        publish=False, pytest_args=FAST,
    )  # fmt: skip
    assert result.success, result.reason
    assert _changed(before, _process_state(model)) == []
    assert all(module.training for module in model.modules())
    assert training_log.gate_lines()[-1].startswith("onnx-gate verdict: PASSED")
