"""The MLflow Model Registry (3.x, tracking server over HTTP): one run per gate session, one
registered version per verified artifact, an alias moved only once the version is READY."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from pathlib import Path
from typing import Any, Mapping

from harness.publish.s3 import PublishError, PublishRefused
from harness.publish.secrets import redact, split_userinfo

# Fail in seconds, not after MLflow's default minutes of retries, when the server is down.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
# A release gate talks to the servers it is given, nothing else: MLflow's usage telemetry is off.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, out)
    else:
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        out[prefix] = text[:6000]


class Registry:
    def __init__(self, tracking_uri: str, *, model_name: str, experiment: str, alias: str) -> None:
        self.tracking_uri = tracking_uri.rstrip("/")
        # MLflow itself prints the URI it is given ("View run at ..."), so it gets the URI without
        # its user:password@ part, and the credentials by its own variables, which redact() knows.
        self.display_uri, self._userinfo = split_userinfo(self.tracking_uri)
        if self._userinfo is not None:
            os.environ.setdefault("MLFLOW_TRACKING_USERNAME", self._userinfo[0])
            os.environ.setdefault("MLFLOW_TRACKING_PASSWORD", self._userinfo[1])
            self.tracking_uri = self.display_uri
        self.model_name, self.experiment, self.alias = model_name, experiment, alias

    def check_reachable(self) -> None:
        """The server answers /health; urllib takes no userinfo in a URL, so it goes in a header."""
        import base64

        request = urllib.request.Request(f"{self.display_uri}/health")
        if self._userinfo is not None:
            token = base64.b64encode(":".join(self._userinfo).encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                if response.status == 200:
                    return
        except (OSError, ValueError) as exc:
            raise PublishError(redact(f"MLflow tracking server at {self.display_uri} is unreachable ({type(exc).__name__})")) from None
        raise PublishError(f"MLflow tracking server at {self.display_uri} is not healthy")

    def check_access(self) -> None:
        """One authenticated read, so a wrong password or token fails before anything is uploaded."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.search_registered_models(max_results=1)
        except MlflowException as exc:
            text = str(exc)
            if any(code in text for code in ("401", "403", "UNAUTHENTICATED", "PERMISSION_DENIED")):
                raise PublishError(redact(
                    f"MLflow at {self.display_uri} rejected the credentials: check MLFLOW_TRACKING_USERNAME / "
                    "MLFLOW_TRACKING_PASSWORD, MLFLOW_TRACKING_TOKEN or the user:password in MLFLOW_TRACKING_URI"
                )) from None  # fmt: skip
            first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
            raise PublishError(redact(f"MLflow at {self.display_uri} refused a test request: {first}"[:500])) from None

    @property
    def client(self) -> Any:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def find_version(self, sha256: str) -> Any | None:
        """The registered version of this artifact, if any (READY first, oldest first)."""
        from mlflow.exceptions import MlflowException

        try:
            versions = self.client.search_model_versions(f"name='{self.model_name}'")
        except MlflowException as exc:
            if "RESOURCE_DOES_NOT_EXIST" in str(exc):
                return None
            raise
        matching = [v for v in versions if v.tags.get("sha256") == sha256 and v.status != "FAILED_REGISTRATION"]
        matching.sort(key=lambda v: (v.status != "READY", int(v.version)))
        return matching[0] if matching else None

    def start_run(self, run_name: str, params: Mapping[str, Any], metrics: Mapping[str, float]) -> str:
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        experiment = mlflow.set_experiment(self.experiment)
        # MLflow would tag the run with sys.argv[0], an absolute path of the build machine.
        run = mlflow.start_run(run_name=run_name, experiment_id=experiment.experiment_id,
                               tags={"mlflow.source.name": "onnx-gate"})
        flat: dict[str, str] = {}
        _flatten("", params, flat)
        mlflow.log_params(flat)
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v == v})  # NaN-free
        return run.info.run_id

    def run_url(self, run_id: str) -> str:
        experiment_id = self.client.get_run(run_id).info.experiment_id
        return f"{self.display_uri}/#/experiments/{experiment_id}/runs/{run_id}"

    def log_reports(self, report_dir: Path) -> None:
        import mlflow

        for name in ("gate.json", "summary.md", "benchmark.json", "parity.png", "latency.png", "junit.xml"):
            if (report_dir / name).is_file():
                mlflow.log_artifact(str(report_dir / name), artifact_path="gate")

    def replace_reports(self, run_id: str, report_dir: Path) -> None:
        """Upload the final gate.json and summary.md, which now hold the publish section."""
        for name in ("gate.json", "summary.md"):
            self.client.log_artifact(run_id, str(report_dir / name), artifact_path="gate")

    def check_model_config(self, model_tags: Mapping[str, str], *, allow_change: bool) -> None:
        """Refuse to add a version to (or move an alias of) a registered model whose versions hold
        another model config, unless the config allows it. Raises PublishRefused."""
        from mlflow.exceptions import MlflowException

        from harness.publish.naming import CALLABLE_TAG, DIGEST_TAG, other_config_versions

        if allow_change or DIGEST_TAG not in model_tags:
            return
        try:
            versions = self.client.search_model_versions(f"name='{self.model_name}'")
        except MlflowException as exc:
            if "RESOURCE_DOES_NOT_EXIST" in str(exc):
                return
            raise
        others = other_config_versions(versions, model_tags[DIGEST_TAG])
        if others:
            newest = max(others, key=lambda v: int(v.version))
            raise PublishRefused(
                f"registered model {self.model_name!r} holds versions of another model config (v{newest.version}: "
                f"{newest.tags.get(CALLABLE_TAG, '?')}, config digest {newest.tags[DIGEST_TAG]}; this one: "
                f"{model_tags.get(CALLABLE_TAG, '?')}, {model_tags[DIGEST_TAG]}); set [publish] model_name to this "
                "model's own name, or allow_config_change = true if it really replaces that model"
            )

    def register(
        self, onnx_path: Path, example: Mapping[str, Any], outputs: Mapping[str, Any], tags: Mapping[str, str],
        *, external_data: bool = False, session_options: Mapping[str, Any] | None = None,
    ) -> Any:
        """Log the artifact with the ONNX flavor in the active run and register it as a version.

        ``external_data``: the graph keeps its weights in external data files (2 GB and more); MLflow
        then saves them as external data too. ``session_options``: ONNX Runtime's settings as the
        gate measured with, which MLflow's pyfunc applies when it loads the model."""
        import mlflow
        import onnx
        import onnxruntime
        from mlflow.models import infer_signature

        signature = infer_signature(dict(example), dict(outputs))
        proto = onnx.load(str(onnx_path))  # with its external data: MLflow serializes the whole model
        # MLflow validates an input example by loading the saved model once more in this process:
        # for a model of 2 GB and more, GBs for a check the gate has made. The signature stays.
        info = mlflow.onnx.log_model(
            proto, name="model", signature=signature, input_example=None if external_data else dict(example),
            save_as_external_data=external_data, onnx_execution_providers=["CPUExecutionProvider"],
            onnx_session_options=dict(session_options) if session_options else None,
            # Stated, not inferred: inference spawns a subprocess that costs seconds per publish.
            pip_requirements=[f"onnx=={onnx.__version__}", f"onnxruntime=={onnxruntime.__version__}"],
        )  # fmt: skip
        del proto
        version = mlflow.register_model(info.model_uri, self.model_name, tags=dict(tags), await_registration_for=0)
        return self.wait_ready(version.version)

    def wait_ready(self, version: str, timeout_s: float = 300) -> Any:
        deadline = time.monotonic() + timeout_s
        while True:
            current = self.client.get_model_version(self.model_name, version)
            if current.status == "READY":
                return current
            if current.status == "FAILED_REGISTRATION" or time.monotonic() > deadline:
                raise PublishError(f"{self.model_name} version {version} is {current.status}, not READY")
            time.sleep(0.5)

    def set_alias(self, version: str) -> None:
        self.client.set_registered_model_alias(self.model_name, self.alias, version)

    def end_run(self, status: str = "FINISHED") -> None:
        import mlflow

        if mlflow.active_run() is not None:
            mlflow.end_run(status=status)
