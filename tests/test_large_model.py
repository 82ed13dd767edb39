"""The slow tier: a model over 2 GB gated from export to publish, with its time and memory.

`make test` skips it; `ONNX_GATE_SLOW_TESTS=1 .venv/bin/python -m pytest tests/test_large_model.py -s` runs it
(about 10 GB of memory and several minutes on
2 cores). It prints one line per phase: seconds and peak resident memory.
"""

from __future__ import annotations

import json
from pathlib import Path

import boto3  # noqa: F401 - imported before pytester snapshots sys.modules (see test_publish.py)
import mlflow
import mlflow.onnx
import numpy as np
import onnxruntime as ort
import pytest
from mlflow import MlflowClient

from harness.publish.s3 import s3_client
from harness.runtime.artifact_files import PROTOBUF_LIMIT, ArtifactManifest, manifest
from tests.conftest import BENCHMARKS, CONFORMANCE

pytestmark = pytest.mark.slow

WEIGHTS_BYTES = 545_472_528 * 4  # tests/user_models.py WideMlp: 545.5 M float32 parameters
NEEDED_BYTES = 12 << 30

WIDE_MLP = """
model = "user_models:wide_mlp"
exporter = "dynamo"
outputs = ["logits"]
report_dir = "reports"

[[inputs]]
name = "features"
shape = ["batch", 1024]
range = [-1.0, 1.0]
dims = { batch = [1, 4] }

[bench]
batches = [1]
[budget]
min_speedup = 0
[publish]
model_name = "wide-mlp-2gb"
prefix = "models/large"
"""


LOCALIZATION_NET = """
model = "harness.models:localization_net"
model_kwargs = { size = "%(size)s" }
exporter = "dynamo"
outputs = ["positions", "uncertainties"]
report_dir = "reports"

[[inputs]]
name = "mel_spectrogram"
shape = ["batch", 3, 128, 32]
range = [-4.0, 4.0]
dims = { batch = [1, 4] }

[bench]
batches = [1]
[budget]
min_speedup = 0
[publish]
model_name = "localization-net-%(size)s"
prefix = "models/scaling"
"""


def _available_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def _bucket_size(env, uri: str) -> tuple[int, list[str]]:
    client = s3_client(env["MLFLOW_S3_ENDPOINT_URL"], env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    items = client.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]
    return sum(item["Size"] for item in items), [item["Key"].removeprefix(prefix) for item in items]


def _download(env, uri: str, target: Path) -> Path:
    client = s3_client(env["MLFLOW_S3_ENDPOINT_URL"], env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    for item in client.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]:
        client.download_file(bucket, item["Key"], str(target / item["Key"].removeprefix(prefix)))
    return target / "model.onnx"


def test_a_model_over_2_gb_is_gated_and_published_whole(project, stack, monkeypatch, tmp_path):
    if _available_bytes() < NEEDED_BYTES:
        pytest.skip(f"needs {NEEDED_BYTES / 2**30:.0f} GiB of available memory, {_available_bytes() / 2**30:.1f} GiB available")
    _, env = stack
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    (project.path / "gate.toml").write_text(WIDE_MLP)
    run = project.run("--gate-publish", "--gate-bench-quick", "--hypothesis-profile=dev", paths=(CONFORMANCE, BENCHMARKS))
    assert run.result.ret == 0, run.result.stdout.str()[-5000:]
    document = run.document
    artifact, published = document["artifact"], document["publish"]

    # The artifact is the graph and its data; its identity is their manifest's sha256.
    files = ArtifactManifest.from_dicts(artifact["files"])
    assert files.data and artifact["size_bytes"] >= PROTOBUF_LIMIT and artifact["sha256"] == files.identity
    # Shipped whole under the identity's key, and the downloaded copy runs.
    assert published["status"] == "published" and published["s3_uri"].endswith(f"/{files.identity}/")
    s3_bytes, objects = _bucket_size(env, published["s3_uri"])
    download = tmp_path / "s3"
    download.mkdir()
    copy = _download(env, published["s3_uri"], download)
    assert manifest(copy).identity == files.identity
    session = ort.InferenceSession(str(copy), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"features": np.linspace(-1, 1, 1024, dtype=np.float32)[None]})
    assert logits.shape == (1, 16) and np.isfinite(logits).all()
    del session

    client = MlflowClient(env["MLFLOW_TRACKING_URI"], registry_uri=env["MLFLOW_TRACKING_URI"])
    version = client.get_model_version("wide-mlp-2gb", published["version"])
    assert version.tags["sha256"] == files.identity
    run_artifacts = client.list_artifacts(published["run_id"], "model")
    mlflow_bytes = sum(a.file_size or 0 for a in run_artifacts)
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    loaded = mlflow.onnx.load_model(f"models:/wide-mlp-2gb/{published['version']}")
    assert [o.name for o in loaded.graph.output] == ["logits"]
    del loaded

    timing = document["timing"]
    peak = max(timing["peak_rss_mb"].values()) * 1e6
    lines = [
        f"weights {WEIGHTS_BYTES / 1e9:.2f} GB; artifact {artifact['size_bytes'] / 1e9:.2f} GB in {len(files.files)} files",
        f"identity {files.identity}",
        f"S3 {published['s3_uri']}: {s3_bytes / 1e9:.2f} GB in {len(objects)} objects {objects}",
        f"MLflow model artifacts: {mlflow_bytes / 1e9:.2f} GB ({[a.path for a in run_artifacts]})",
        f"total {timing['total_s']:.0f} s; peak RSS {peak / 1e9:.2f} GB = {peak / WEIGHTS_BYTES:.2f}x the weights",
        "seconds per part: " + json.dumps(timing["parts_s"]),
        "peak RSS per phase (MB): " + json.dumps(timing["peak_rss_mb"]),
        "cache: " + json.dumps(artifact.get("cache")),
    ]
    print("\n".join(lines))


def _phase_lines(label: str, document: dict, weights_bytes: int) -> str:
    timing = document["timing"]
    peak = max(timing["peak_rss_mb"].values()) * 1e6
    return (f"{label}: weights {weights_bytes / 1e6:.0f} MB, artifact {document['artifact']['size_bytes'] / 1e6:.0f} MB, "
            f"total {timing['total_s']:.0f} s, peak RSS {peak / 1e6:.0f} MB ({peak / weights_bytes:.1f}x weights); "
            f"seconds {json.dumps(timing['parts_s'])}; peak MB {json.dumps(timing['peak_rss_mb'])}")


@pytest.mark.parametrize("size", ["tiny", "base", "large"])
def test_localization_net_sizes_for_the_scaling_table(size, project, stack, monkeypatch):
    """The same gate as above on LocalizationNet's sizes, for the growth from 28 M parameters up."""
    from harness.models import localization_net

    _, env = stack
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    (project.path / "gate.toml").write_text(LOCALIZATION_NET % {"size": size})
    run = project.run("--gate-publish", "--gate-bench-quick", "--hypothesis-profile=dev", paths=(CONFORMANCE, BENCHMARKS))
    assert run.result.ret == 0, run.result.stdout.str()[-5000:]
    assert run.document["publish"]["status"] == "published"
    weights = sum(p.numel() * 4 for p in localization_net(size).parameters())
    print(_phase_lines(f"LocalizationNet {size}", run.document, weights))
