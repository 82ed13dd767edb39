"""Gated publishing against real SeaweedFS and MLflow servers: no mocks of S3 or MLflow."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import boto3  # noqa: F401 - imported before pytester snapshots sys.modules, see below
import mlflow
import mlflow.onnx
import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from harness.core.config import PublishConfig
from harness.models import localization_net
from harness.publish import flow, s3_mlflow
from harness.publish.claim import ClaimOwner, machine_id
from harness.publish.registry import Registry
from harness.publish.s3 import ArtifactStore, s3_client
from harness.runtime.export import file_sha256
from tests import defects
from tests.conftest import BENCHMARKS, CONFORMANCE, TWO_INPUT_NET

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


def test_mlflow_unreachable_stops_the_publish_before_anything_is_uploaded(stack, tmp_path):
    _, env = stack
    request = _request(_artifact(tmp_path, 2), _unique("no-mlflow"))
    outcome = flow.publish_file(request, {**env, "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"})
    assert outcome.status == "failed" and not outcome.uploaded and outcome.location is None
    assert "MLflow tracking server at http://127.0.0.1:9 is unreachable" in outcome.reason
    assert _key(request) not in _store(env).list_keys()
    assert _versions(env, request.settings.model_name) == []


def test_mlflow_failing_after_the_upload_says_what_was_left_and_a_rerun_completes_it(stack, tmp_path, monkeypatch):
    _, env = stack
    request = _request(_artifact(tmp_path, 6), _unique("mlflow-dies"))
    # The one fake: a registry that passes the up-front check and dies right after the upload
    # cannot be produced on demand from a real server.
    def registry_gone(*args, **kwargs):
        raise ConnectionError("Connection refused")

    with monkeypatch.context() as patch:
        patch.setattr(Registry, "register", registry_gone)
        outcome = flow.publish_file(request, env, notify=lambda message: None)
    assert outcome.status == "failed" and outcome.uploaded
    assert f"{outcome.location} is uploaded and verified but not registered" in outcome.reason
    assert "a later --gate-publish run of this artifact reuses it instead of uploading again" in outcome.reason
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
    notices: list[str] = []
    outcome = flow.publish_file(request, env, notify=notices.append).to_dict()
    return {**outcome, "notices": notices}


def _publish_concurrently(requests, env):
    with multiprocessing.get_context("spawn").Pool(len(requests)) as pool:
        return pool.map(_publish_in_process, [(r, env) for r in requests])


def test_the_same_artifact_published_by_4_processes_at_once_gives_exactly_one_version(stack, tmp_path):
    _, env = stack
    request = _request(_artifact(tmp_path, 5), _unique("race-same"))
    outcomes = _publish_concurrently([request] * 4, env)
    assert all(o["status"] == "published" for o in outcomes), [o["reason"] for o in outcomes]
    assert {o["version"] for o in outcomes} == {"1"}
    assert sum(o["created_version"] for o in outcomes) == 1, [o["notices"] for o in outcomes]
    assert len(_versions(env, request.settings.model_name)) == 1


def test_a_version_whose_creation_was_answered_with_a_conflict_is_still_reported_as_created(stack, tmp_path, monkeypatch):
    # A SQLite-backed server under concurrent writers can commit the version and still answer
    # with an IntegrityError (its client retried a write that had gone through). A real server
    # cannot be made to do that on demand, so the first creation call does the real work and
    # then raises what such a server raises.
    _, env = stack
    request = _request(_artifact(tmp_path, 6), _unique("conflict-after-write"))
    real_create = MlflowClient.create_model_version
    calls: list[str] = []

    def create_then_conflict(self, *args, **kwargs):
        version = real_create(self, *args, **kwargs)
        calls.append(version.version)
        if len(calls) == 1:
            raise mlflow.exceptions.MlflowException("(sqlite3.IntegrityError) UNIQUE constraint failed: model_versions")
        return version

    monkeypatch.setattr(MlflowClient, "create_model_version", create_then_conflict)
    notices: list[str] = []
    outcome = flow.publish_file(request, env, notify=notices.append)
    assert outcome.status == "published", outcome.reason
    assert calls == ["1"]  # the retry found the version instead of creating a second one
    assert outcome.created_version and outcome.version == "1"
    assert any("trying once more" in notice for notice in notices), notices
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


# --- a registration claim left behind by a publisher that was killed --------------------------


def _claim_key(request: flow.PublishRequest) -> str:
    return f"{request.settings.prefix}/{request.settings.model_name}/{request.sha256}.registering"


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()  # reaped: its pid names no process now
    return process.pid


def test_a_claim_left_by_a_killed_publisher_on_this_machine_is_named_and_cleared_at_once(stack, tmp_path):
    _, env = stack
    request = _request(_artifact(tmp_path, 20), _unique("stale-local"))
    dead = ClaimOwner(socket.gethostname(), machine_id(), _dead_pid(), "killed-run")
    assert _store(env).claim(_claim_key(request), dead.encode())
    messages: list[str] = []
    started = time.monotonic()
    outcome = flow.publish_file(request, env, notify=messages.append)
    assert outcome.status == "published" and outcome.created_version, outcome.reason
    assert time.monotonic() - started < 60
    assert messages == [
        f"cleared the registration claim s3://heimdall-models/{_claim_key(request)}: its owner, "
        f"pid {dead.pid} on {dead.host} (gate run killed-run), no longer runs"
    ]
    assert _claim_key(request) not in _store(env).list_keys()


def test_a_claim_held_elsewhere_is_named_while_waiting_and_cleared_once_stale(stack, tmp_path, monkeypatch):
    _, env = stack
    request = _request(_artifact(tmp_path, 21), _unique("stale-remote"))
    elsewhere = ClaimOwner("ci-runner-7", "ci-runner-7/other-boot/1", 4242, "remote-run")
    assert _store(env).claim(_claim_key(request), elsewhere.encode())
    monkeypatch.setattr(s3_mlflow, "CLAIM_STALE_S", 3.0)  # a setting: how long a silent claim is trusted
    messages: list[str] = []
    outcome = flow.publish_file(request, env, notify=messages.append)
    assert outcome.status == "published" and outcome.created_version, outcome.reason
    claim = f"s3://heimdall-models/{_claim_key(request)}"
    assert messages[0].startswith(f"waiting for pid 4242 on ci-runner-7 (gate run remote-run), which holds the registration claim {claim}")
    assert "or delete that object to clear it by hand" in messages[0]
    assert messages[-1].startswith(f"cleared the registration claim {claim}: its owner, pid 4242 on ci-runner-7 (gate run remote-run), has not refreshed it for")


def test_waiting_for_a_live_claim_gives_up_naming_it_and_how_to_clear_it(stack, tmp_path, monkeypatch):
    _, env = stack
    request = _request(_artifact(tmp_path, 22), _unique("held"))
    alive = ClaimOwner(socket.gethostname(), machine_id(), os.getpid(), "live-run")  # this very process
    assert _store(env).claim(_claim_key(request), alive.encode())
    monkeypatch.setattr(s3_mlflow, "CLAIM_WAIT_S", 2.0)
    outcome = flow.publish_file(request, env, notify=lambda message: None)
    assert outcome.status == "failed"
    claim = f"s3://heimdall-models/{_claim_key(request)}"
    assert f"gave up after 2 s waiting for pid {os.getpid()}" in outcome.reason
    assert f"which holds the registration claim {claim}; if that publisher is not running, delete the claim object" in outcome.reason
    assert "is uploaded and verified but not registered" in outcome.reason
    _store(env).release(_claim_key(request))


# --- what is printed, stored and published -----------------------------------------------------


def _publish_two_input_net(project, env, monkeypatch):
    name = _unique("small")
    project.write_config(TWO_INPUT_NET, extra=PUBLISHABLE % (name, name))
    return _run_gate(project, env, monkeypatch), name


def test_published_runs_carry_neither_the_tracking_password_nor_an_absolute_path(project, stack, monkeypatch):
    """One publishing run with a password in the tracking URI: the password appears nowhere it
    could leak (terminal, reports, MLflow params and tags), and no param or tag names a path on
    the build machine."""
    _, env = stack
    password = "pw-" + uuid.uuid4().hex
    uri = env["MLFLOW_TRACKING_URI"].replace("http://", f"http://gate-user:{password}@")
    run, name = _publish_two_input_net(project, {**env, "MLFLOW_TRACKING_URI": uri}, monkeypatch)
    assert run.result.ret == 0, run.result.stdout.str()
    assert run.document["publish"]["run_url"].startswith(env["MLFLOW_TRACKING_URI"] + "/#/experiments/")
    folder = project.path / "reports" / run.document["run_id"]
    texts = [run.result.stdout.str(), run.result.stderr.str()] + [p.read_text(errors="replace") for p in folder.iterdir() if p.is_file()]
    published = _client(env).get_run(run.document["publish"]["run_id"]).data
    version_tags = _versions(env, name)[0].tags
    texts += [json.dumps(published.params), json.dumps(published.tags), json.dumps(version_tags)]
    assert not [text for text in texts if password in text]

    values = {**published.params, **published.tags, **version_tags}
    absolute = {key: value for key, value in values.items() if re.search(r"(^|[\s'\"\[(=])/[\w.-]+/", value)}
    assert absolute == {}
    assert published.params["config.sources"] == '["gate.toml"]'


def test_a_conflict_the_sqlite_registry_gives_a_concurrent_writer_is_tried_once_more(stack, tmp_path, monkeypatch):
    from harness.publish.registry import Registry

    _, env = stack
    request = _request(_artifact(tmp_path, 6), _unique("conflict"))
    real_start_run, calls = Registry.start_run, []

    # The one fake: a SQLite-backed server answers a write that went through, then was retried, with
    # an IntegrityError only under concurrent load; it cannot be made to on demand.
    def conflicting_once(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("RestException: BAD_REQUEST: (sqlite3.IntegrityError) UNIQUE constraint failed")
        return real_start_run(self, *args, **kwargs)

    monkeypatch.setattr(Registry, "start_run", conflicting_once)
    outcome = flow.publish_file(request, env)
    assert outcome.status == "published" and outcome.created_version, outcome.reason
    assert len(calls) == 2 and [v.version for v in _versions(env, request.settings.model_name)] == ["1"]


# --- the MLflow-only target: MLflow's own artifact store, no S3 credentials ---------------------


def test_the_mlflow_only_target_stores_the_artifact_in_mlflow_and_needs_no_s3_credentials(stack, tmp_path, monkeypatch):
    _, env = stack
    for key in ("MLFLOW_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key, raising=False)  # a managed MLflow's user: a tracking URI, nothing else
    only_mlflow = {"MLFLOW_TRACKING_URI": env["MLFLOW_TRACKING_URI"]}
    name = _unique("mlflow-only")
    path = _artifact(tmp_path, 8)
    request = _request(path, name)
    request = dataclasses.replace(request, settings=dataclasses.replace(request.settings, target="mlflow"))
    bucket_before = set(_store(env).list_keys())

    outcome = flow.publish_file(request, only_mlflow)
    assert outcome.status == "published" and outcome.created_version and outcome.uploaded, outcome.reason
    assert outcome.location.startswith("mlflow-artifacts:/"), outcome.location
    assert str(outcome).startswith(f"PUBLISHED | {outcome.location} -> {name} v1 @staging")
    section = outcome.to_dict()  # gate.json's words for this target
    assert section["artifact_uri"] == outcome.location and section["run_id"] == outcome.record_id
    assert set(_store(env).list_keys()) == bucket_before  # nothing went to the gate's bucket
    version = _versions(env, name)[0]
    assert version.tags["sha256"] == request.sha256 and "s3_uri" not in version.tags
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{name}@staging", dst_path=str(tmp_path / "mlflow")))
    assert file_sha256(local / "model.onnx") == request.sha256  # the bytes the gate checked

    again = flow.publish_file(request, only_mlflow)
    assert (again.status, again.version, again.created_version, again.uploaded) == ("published", "1", False, False)
    assert len(_versions(env, name)) == 1


@pytest.mark.slow  # a whole gate run with benchmarks and a publish: ~40 s alone
def test_a_gate_publishes_end_to_end_through_the_mlflow_only_target(project, stack, monkeypatch):
    _, env = stack
    name = _unique("gate-mlflow-only")
    project.write_config(extra=PUBLISHABLE % (name, name) + 'target = "mlflow"\n')
    bucket_before = set(_store(env).list_keys())
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"])
    for key in ("MLFLOW_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key, raising=False)  # a managed MLflow's user: no S3 credentials
    run = project.run("--gate-publish", "--gate-bench-quick", paths=(CONFORMANCE, BENCHMARKS))
    assert run.result.ret == 0, run.result.stdout.str()
    published = run.document["publish"]
    assert published["status"] == "published" and published["artifact_uri"].startswith("mlflow-artifacts:/")
    run.result.stdout.fnmatch_lines([f"publish: PUBLISHED | mlflow-artifacts:/* -> {name} v1 @staging (new version)"])
    assert set(_store(env).list_keys()) == bucket_before
    client = _client(env)
    logged = json.loads(Path(client.download_artifacts(published["run_id"], "gate/gate.json", str(project.path))).read_text())
    assert logged["publish"]["artifact_uri"] == published["artifact_uri"]  # the run holds the final report
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    loaded = mlflow.onnx.load_model(f"models:/{name}@staging")
    assert [o.name for o in loaded.graph.output] == ["positions", "uncertainties"]
