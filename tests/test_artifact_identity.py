"""The artifact is the whole model: a graph and its external data files, one identity over all,
shipped so that the downloaded copy runs, registered once per identity under the model's own name."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import tomllib
import uuid
from pathlib import Path

import boto3  # noqa: F401 - imported before pytester snapshots sys.modules (see test_publish.py)
import mlflow
import mlflow.onnx
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import yaml
from mlflow import MlflowClient

from harness.cli import gate_value_options, positional_arguments
from harness.core import config as gate_config
from harness.core.config import PublishConfig
from harness.models import localization_net
from harness.publish import flow
from harness.publish.naming import version_tags
from harness.publish.s3 import s3_client
from harness.runtime.artifact_files import ArtifactManifest, file_sha256, manifest
from harness.runtime.export import inspect_onnx
from tests import defects
from tests.conftest import CONFORMANCE, TWO_INPUT_NET


def _exported(tmp_path: Path, seed: int) -> Path:
    path = tmp_path / f"single-{seed}.onnx"
    torch.onnx.export(localization_net("test", seed=seed), defects.example(), str(path), dynamo=False,
                      input_names=[defects.INPUT], output_names=defects.OUTPUTS,
                      dynamic_axes={defects.INPUT: {0: "batch"}}, opset_version=17)  # fmt: skip
    return path


def _with_external_data(source: Path, folder: Path, name: str = "model.onnx") -> Path:
    """``source`` saved as a graph plus one data file, every tensor outside, as large models are."""
    folder.mkdir(parents=True)
    onnx.save_model(onnx.load(str(source)), str(folder / name), save_as_external_data=True,
                    all_tensors_to_one_file=True, location=f"{name}.data", size_threshold=0)  # fmt: skip
    return folder / name


def _run(path: Path) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {defects.INPUT: defects.example()[0].numpy()})[0]


@pytest.mark.checks
def test_the_identity_covers_the_weights_and_not_the_folder(tmp_path):
    first = _with_external_data(_exported(tmp_path, 1), tmp_path / "a")
    moved = shutil.copytree(tmp_path / "a", tmp_path / "elsewhere" / "b") / "model.onnx"
    other = _with_external_data(_exported(tmp_path, 2), tmp_path / "c")
    # The case: the same graph file, other weights in the data file beside it.
    assert first.read_bytes() == other.read_bytes()
    one, same, two = manifest(first), manifest(moved), manifest(other)
    assert not one.self_contained and [f.name for f in one.data] == ["model.onnx.data"]
    assert one.identity == same.identity
    assert one.identity != two.identity and one.graph.sha256 == two.graph.sha256
    assert one.identity != one.graph.sha256 and one.size == first.stat().st_size + (tmp_path / "a/model.onnx.data").stat().st_size
    assert ArtifactManifest.from_dicts(one.to_dict()).identity == one.identity
    single = _exported(tmp_path, 1)
    assert manifest(single).identity == file_sha256(single)  # a self-contained file: its own sha256


def test_a_graph_without_its_data_file_is_named_as_such(tmp_path):
    graph = _with_external_data(_exported(tmp_path, 1), tmp_path / "a")
    (tmp_path / "a" / "model.onnx.data").unlink()
    with pytest.raises(Exception, match="names external data file 'model.onnx.data', which is not beside it"):
        inspect_onnx(graph, "given")


def test_a_given_model_with_external_data_is_gated_and_shipped_as_one_file(project, tmp_path):
    given = _with_external_data(defects.export(tmp_path / "good.onnx"), tmp_path / "given", "net.onnx")
    project.write_config()
    run = project.run("--gate-onnx", str(given), "-k", "artifact or contract")
    assert run.result.ret == 0, run.result.stdout.str()
    artifact = run.document["artifact"]
    assert artifact["inlined_data_files"] == 1
    assert [f["role"] for f in artifact["files"]] == ["graph"]  # one self-contained file
    assert artifact["sha256"] == artifact["files"][0]["sha256"]
    assert artifact["size_bytes"] > 200_000  # the weights are in it, not 1 KB of graph


# --- the registry and the bucket, real servers ---------------------------------------------------


def _request(path: Path, name: str, *, digest_of: str = TWO_INPUT_NET) -> flow.PublishRequest:
    info = inspect_onnx(path, "given")
    example = {defects.INPUT: np.zeros((1, 3, 128, 32), np.float32)}
    outputs = {"positions": np.zeros((1, 2), np.float32), "uncertainties": np.zeros((1, 2), np.float32)}
    config = gate_config.parse(tomllib.loads(digest_of % {"exporter": "torchscript"}), path.parent)
    return flow.PublishRequest(
        path=info.path, sha256=info.sha256, settings=PublishConfig(model_name=name, prefix=f"models/{name}"),
        gate_run_id=uuid.uuid4().hex[:8], model_type=config.model, git_commit="test", params={}, metrics={},
        example=example, outputs=outputs, manifest=ArtifactManifest.from_dicts(info.files),
        model_tags=version_tags(config), session_options={"graph_optimization_level": 99, "intra_op_num_threads": 2,
                                                          "inter_op_num_threads": 1, "execution_mode": "sequential"},
    )  # fmt: skip


def _download(env, uri: str, target: Path) -> Path:
    """The S3 copy as a consumer gets it: every object under the artifact's key."""
    client = s3_client(env["MLFLOW_S3_ENDPOINT_URL"], env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not key.endswith("/"):
        client.download_file(bucket, key, str(target / "model.onnx"))
        return target / "model.onnx"
    for item in client.list_objects_v2(Bucket=bucket, Prefix=key)["Contents"]:
        destination = target / item["Key"].removeprefix(key)
        destination.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(bucket, item["Key"], str(destination))
    return target / "model.onnx"


def test_two_weight_sets_give_two_identities_and_two_versions_that_run_and_load_from_both_stores(stack, tmp_path, monkeypatch):
    _, env = stack
    name = f"two-weights-{uuid.uuid4().hex[:8]}"
    graphs = [_with_external_data(_exported(tmp_path, seed), tmp_path / f"w{seed}") for seed in (1, 2)]
    outcomes = [flow.publish_file(_request(graph, name), env) for graph in graphs]
    for outcome in outcomes:
        assert outcome.status == "published" and outcome.created_version and outcome.uploaded, outcome.reason
    identities = [outcome.sha256 for outcome in outcomes]
    assert identities[0] != identities[1] and [o.version for o in outcomes] == ["1", "2"]
    print(f"identities {identities} -> versions {[o.version for o in outcomes]}")  # for the closing note
    for graph, outcome in zip(graphs, outcomes):
        # Multi-file, as a model of 2 GB ships: the graph and its data under the identity's key.
        assert outcome.location.endswith(f"/{outcome.sha256}/")
        download = tmp_path / "s3" / outcome.version
        download.mkdir(parents=True)
        copy = _download(env, outcome.location, download)
        assert manifest(copy).identity == outcome.sha256
        np.testing.assert_array_equal(_run(copy), _run(graph))
    republished = flow.publish_file(_request(graphs[1], name), env)
    assert (republished.version, republished.created_version, republished.uploaded) == ("2", False, False)

    client = MlflowClient(env["MLFLOW_TRACKING_URI"], registry_uri=env["MLFLOW_TRACKING_URI"])
    version = client.get_model_version(name, "2")
    assert version.tags["sha256"] == identities[1] and version.tags["model_callable"] == "user_models:two_input_net"
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    loaded = mlflow.onnx.load_model(f"models:/{name}/2")
    assert [o.name for o in loaded.graph.output] == defects.OUTPUTS
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/2", dst_path=str(tmp_path / "mlflow")))
    flavor = yaml.safe_load((local / "MLmodel").read_text())["flavors"]["onnx"]
    assert flavor["onnx_session_options"]["graph_optimization_level"] == 99
    assert flavor["onnx_session_options"]["intra_op_num_threads"] == 2
    np.testing.assert_array_equal(_run(local / "model.onnx"), _run(graphs[1]))

    # Another model config may not add a version to this registered model, nor move its alias...
    other_config = TWO_INPUT_NET.replace("two_input_net", "frame_net")
    request = _request(_exported(tmp_path, 5), name, digest_of=other_config)
    refused = flow.publish_file(request, env)
    assert refused.status == "refused" and not refused.uploaded
    assert f"registered model {name!r} holds versions of another model config" in refused.reason
    assert "allow_config_change = true" in refused.reason
    assert len(client.search_model_versions(f"name='{name}'")) == 2
    assert client.get_model_version_by_alias(name, "staging").version == "2"
    # ...unless the config says so.
    allowed = flow.publish_file(dataclasses.replace(request, allow_config_change=True), env)
    assert allowed.status == "published" and allowed.version == "3", allowed.reason


# --- names and options, no servers -----------------------------------------------------------


def test_publishing_an_unnamed_model_other_than_the_default_is_refused_before_the_gate_runs(project):
    project.write_config(TWO_INPUT_NET)
    run = project.run("--gate-publish")
    assert run.result.ret == 4
    errors = [line for line in run.result.stderr.lines if line.strip()]
    assert len(errors) == 1 and errors[0].startswith(
        "ERROR: onnx-gate: --gate-publish refused before the gate ran: user_models:two_input_net is not the "
        "built-in default model, so it needs its own registered model name; set [publish] model_name = "
    ), errors  # fmt: skip
    assert run.document is None  # nothing ran: no report


def test_option_values_are_never_test_paths():
    options = gate_value_options()
    assert {"--gate-report-dir", "--gate-config", "--gate-onnx", "--gate-model", "--gate-checkpoint",
            "--gate-exporter", "--gate-opset"} <= options and "--gate-publish" not in options  # fmt: skip
    for option in sorted(options):
        assert positional_arguments([option, "conformance", "-q"]) == []
        assert positional_arguments([f"{option}=conformance", "-q"]) == []
    assert positional_arguments(["--gate-report-dir", "reports", "-k", "parity", "conformance/test_parity.py"]) == [
        "conformance/test_parity.py"
    ]


def test_a_second_run_with_a_report_dir_option_runs_the_gate_again(project):
    project.write_config()
    (project.path / "runs").mkdir()  # as the first run leaves it: the folder now exists
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", "--gate-config", "gate.toml", "--gate-report-dir", "runs",
         "-k", "artifact", "--hypothesis-profile=smoke", "-p", "no:cacheprovider"],
        cwd=project.path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert "1 passed" in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]
    document = json.loads(next((project.path / "runs").glob("2*/gate.json")).read_text())
    assert document["checks"]["artifact"]["status"] == "passed"
