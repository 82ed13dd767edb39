"""Gated publishing against real SeaweedFS and MLflow servers: no mocks of S3 or MLflow."""

from __future__ import annotations

import json
import multiprocessing
import uuid
from pathlib import Path

import boto3  # noqa: F401 - imported before pytester snapshots sys.modules, see below
import mlflow
import mlflow.onnx
import numpy as np
import torch
from mlflow import MlflowClient

from harness.config import PublishConfig
from harness.export import file_sha256
from harness.models import localization_net
from harness.publish import flow
from harness.publish.s3 import ArtifactStore, s3_client
from tests import defects
from tests.conftest import BENCHMARKS, CONFORMANCE

PUBLISHABLE = "\n[bench]\nbatches = [1, 2]\n[budget]\nmin_speedup = 0\n[publish]\nmodel_name = \"%s\"\nprefix = \"models/%s\"\n"


def _unique(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}"


def _store(env):
    client = s3_client(env["MLFLOW_S3_ENDPOINT_URL"], env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])
    return ArtifactStore(client, endpoint=env["MLFLOW_S3_ENDPOINT_URL"], bucket="heimdall-models", prefix="models")


# pytester restores sys.modules after each test: a package first imported inside one test
# would be half-removed for the next, so mlflow and boto3 are imported at module level above.


def _client(env):
    return MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"], registry_uri=env["MLFLOW_TRACKING_URI"])


def _versions(env, name):
    try:
        return _client(env).search_model_versions(f"name='{name}'")
    except Exception as exc:
        if "RESOURCE_DOES_NOT_EXIST" in str(exc):
            return []
        raise


def _assert_no_secret(env, *texts):
    secret = env["AWS_SECRET_ACCESS_KEY"]
    for text in texts:
        assert secret not in str(text)


def _assert_no_secret_in_mlflow(env):
    client = _client(env)
    for experiment in client.search_experiments():
        for run in client.search_runs([experiment.experiment_id]):
            _assert_no_secret(env, json.dumps(run.data.params), json.dumps(run.data.tags))
    for model in client.search_registered_models():
        for version in _versions(env, model.name):
            _assert_no_secret(env, json.dumps(version.tags))


def _run_gate(project, env, monkeypatch, *args):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    run = project.run("--gate-publish", "--gate-bench-quick", *args, paths=(CONFORMANCE, BENCHMARKS))
    folder = project.path / "reports" / run.document["run_id"]
    reports = [p.read_text(errors="replace") for p in folder.iterdir() if p.suffix in (".json", ".md", ".xml")]
    _assert_no_secret(env, run.result.stdout.str(), run.result.stderr.str(), *reports)
    return run


def test_a_passing_gate_publishes_one_loadable_version_and_republishing_creates_none(project, stack, monkeypatch):
    _, env = stack
    name = _unique("passing")
    project.write_config(extra=PUBLISHABLE % (name, name))
    first = _run_gate(project, env, monkeypatch)
    assert first.result.ret == 0, first.result.stdout.str()
    published = first.document["publish"]
    assert published["status"] == "published" and published["created_version"] and published["uploaded"]
    sha = first.document["artifact"]["sha256"]
    assert published["s3_uri"] == f"s3://heimdall-models/models/{name}/{name}/{sha}.onnx"
    first.result.stdout.fnmatch_lines(["publish: PUBLISHED | s3://heimdall-models/*@staging (new version)"])

    client = _client(env)
    version = client.get_model_version_by_alias(name, "staging")
    assert version.version == published["version"] == "1" and version.status == "READY"
    assert version.tags["sha256"] == sha and version.tags["s3_uri"] == published["s3_uri"]
    assert version.tags["gate_run_id"] == first.document["run_id"] and version.tags["git_commit"]
    assert int(version.tags["size"]) == first.document["artifact"]["size_bytes"]
    head = _store(env).client.head_object(Bucket="heimdall-models", Key=published["s3_uri"].split("heimdall-models/")[1])
    assert head["Metadata"]["sha256"] == sha and head["Metadata"]["format"] == "onnx"

    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL"):
        monkeypatch.delenv(key)  # clients need only the tracking URI: artifacts are proxied
    loaded = mlflow.onnx.load_model(f"models:/{name}@staging")
    assert [o.name for o in loaded.graph.output] == ["positions", "uncertainties"]
    run = client.get_run(published["run_id"])
    assert run.data.params["exporter"] == "torchscript"
    assert "parity.positions.max_abs" in run.data.metrics and "speedup.cpu.batch1" in run.data.metrics
    assert {a.path for a in client.list_artifacts(run.info.run_id, "gate")} >= {"gate/gate.json", "gate/summary.md", "gate/benchmark.json"}
    logged = json.loads(Path(client.download_artifacts(run.info.run_id, "gate/gate.json", str(project.path))).read_text())
    assert logged["publish"]["version"] == "1" and logged["publish"]["status"] == "published"

    second = _run_gate(project, env, monkeypatch)
    assert second.result.ret == 0
    assert second.document["publish"]["version"] == "1"
    assert not second.document["publish"]["created_version"] and not second.document["publish"]["uploaded"]
    assert len(_versions(env, name)) == 1
    _assert_no_secret_in_mlflow(env)


def test_a_failing_gate_leaves_bucket_and_registry_unchanged(project, stack, monkeypatch, tmp_path):
    _, env = stack
    name = _unique("failing")
    project.write_config(extra=PUBLISHABLE % (name, name))
    keys_before = set(_store(env).list_keys())
    models_before = {m.name for m in _client(env).search_registered_models()}
    defect = defects.perturb_one_weight(defects.export(tmp_path / "good.onnx"), tmp_path / "bad.onnx")
    run = _run_gate(project, env, monkeypatch, "--gate-onnx", str(defect))
    assert run.result.ret == 1
    assert run.document["publish"]["status"] == "refused"
    assert "parity (failed)" in run.document["publish"]["reason"]
    assert set(_store(env).list_keys()) == keys_before
    assert {m.name for m in _client(env).search_registered_models()} == models_before


def test_a_narrowed_session_refuses_to_publish_and_names_the_checks_that_did_not_run(project, stack, monkeypatch):
    _, env = stack
    name = _unique("narrowed")
    project.write_config(extra=PUBLISHABLE % (name, name))
    run = _run_gate(project, env, monkeypatch, "-k", "contract or artifact")
    assert run.result.ret != 0
    reason = run.document["publish"]["reason"]
    for check in ("parity (not run)", "determinism (not run)", "latency_budget (not run)"):
        assert check in reason
    assert _versions(env, name) == []


# --- faults, through the library, against the same real servers -----------------------------


def _artifact(tmp_path: Path, seed: int) -> Path:
    model = localization_net("test", seed=seed)
    path = tmp_path / f"model-{seed}.onnx"
    torch.onnx.export(model, defects.example(), str(path), dynamo=False, input_names=[defects.INPUT],
                      output_names=defects.OUTPUTS, dynamic_axes={defects.INPUT: {0: "batch"}})
    return path


def _request(path: Path, name: str) -> flow.PublishRequest:
    example = {defects.INPUT: np.zeros((1, 3, 128, 32), np.float32)}
    outputs = {"positions": np.zeros((1, 2), np.float32), "uncertainties": np.zeros((1, 2), np.float32)}
    return flow.PublishRequest(
        path=path, sha256=file_sha256(path), settings=PublishConfig(model_name=name, prefix=f"models/{name}"),
        gate_run_id=_unique("run"), model_type="harness.models:localization_net", git_commit="test",
        params={"exporter": "torchscript"}, metrics={"parity.positions.max_abs": 1e-7}, example=example, outputs=outputs,
    )  # fmt: skip


def _key(request: flow.PublishRequest) -> str:
    return f"{request.settings.prefix}/{request.settings.model_name}/{request.sha256}.onnx"


def test_s3_unreachable_fails_clearly_and_registers_nothing(stack, tmp_path):
    _, env = stack
    request = _request(_artifact(tmp_path, 1), _unique("no-s3"))
    outcome = flow.publish_file(request, {**env, "MLFLOW_S3_ENDPOINT_URL": "http://127.0.0.1:9"})
    assert outcome.status == "failed"
    assert "cannot reach S3 at http://127.0.0.1:9" in outcome.reason
    assert _versions(env, request.settings.model_name) == []
    _assert_no_secret(env, outcome.reason)


def test_mlflow_unreachable_keeps_the_upload_and_a_rerun_registers_without_uploading(stack, tmp_path):
    _, env = stack
    request = _request(_artifact(tmp_path, 2), _unique("no-mlflow"))
    outcome = flow.publish_file(request, {**env, "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"})
    assert outcome.status == "failed" and outcome.uploaded
    assert "MLflow tracking server at http://127.0.0.1:9 is unreachable" in outcome.reason
    assert _key(request) in _store(env).list_keys()
    assert _versions(env, request.settings.model_name) == []
    rerun = flow.publish_file(request, env)
    assert rerun.status == "published", rerun.reason
    assert not rerun.uploaded and rerun.created_version and rerun.version == "1"


def test_wrong_credentials_are_access_denied_and_write_nothing(stack, tmp_path):
    _, env = stack
    request = _request(_artifact(tmp_path, 3), _unique("bad-keys"))
    keys_before = set(_store(env).list_keys())
    wrong = "not-the-secret-" + uuid.uuid4().hex
    outcome = flow.publish_file(request, {**env, "AWS_SECRET_ACCESS_KEY": wrong})
    assert outcome.status == "failed"
    assert "S3 access denied" in outcome.reason and "check AWS_ACCESS_KEY_ID" in outcome.reason
    assert wrong not in outcome.reason and env["AWS_SECRET_ACCESS_KEY"] not in outcome.reason
    assert set(_store(env).list_keys()) == keys_before
    assert _versions(env, request.settings.model_name) == []


def test_a_read_back_mismatch_removes_the_object_and_registers_nothing(stack, tmp_path, monkeypatch):
    _, env = stack
    request = _request(_artifact(tmp_path, 4), _unique("corrupt"))
    # The one fake: a server that returns other bytes than it stored cannot be made to on demand.
    monkeypatch.setattr(ArtifactStore, "read_back_sha256", lambda self, key: ("0" * 64, request.path.stat().st_size))
    outcome = flow.publish_file(request, env)
    assert outcome.status == "failed" and "verification failed" in outcome.reason and "was removed" in outcome.reason
    assert _key(request) not in _store(env).list_keys()
    assert _versions(env, request.settings.model_name) == []


def _publish_in_process(args):
    request, env = args
    return flow.publish_file(request, env).to_dict()


def _publish_concurrently(requests, env):
    with multiprocessing.get_context("spawn").Pool(len(requests)) as pool:
        return pool.map(_publish_in_process, [(r, env) for r in requests])


def test_the_same_artifact_published_by_4_processes_at_once_gives_exactly_one_version(stack, tmp_path):
    _, env = stack
    request = _request(_artifact(tmp_path, 5), _unique("race-same"))
    outcomes = _publish_concurrently([request] * 4, env)
    assert all(o["status"] == "published" for o in outcomes), [o["reason"] for o in outcomes]
    assert {o["version"] for o in outcomes} == {"1"}
    assert sum(o["created_version"] for o in outcomes) == 1
    assert len(_versions(env, request.settings.model_name)) == 1


def test_4_different_artifacts_published_at_once_give_4_versions(stack, tmp_path):
    _, env = stack
    name = _unique("race-different")
    requests = [_request(_artifact(tmp_path, seed), name) for seed in (10, 11, 12, 13)]
    outcomes = _publish_concurrently(requests, env)
    assert all(o["status"] == "published" for o in outcomes), [o["reason"] for o in outcomes]
    versions = _versions(env, name)
    assert len(versions) == 4
    assert {v.tags["sha256"] for v in versions} == {r.sha256 for r in requests}
    _assert_no_secret_in_mlflow(env)
