"""The production baseline's file, read from the MLflow registry (``--gate-baseline models:/NAME@ALIAS``)
or given as a file: what harness/bench/baseline.py times beside the candidate."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.core.baseline_spec import BaselineSpec
from harness.core.errors import GateError, first_line
from harness.core.publish_outcome import PublishError
from harness.core.secrets import redact
from harness.publish.registry import Registry


@dataclass(frozen=True)
class Fetched:
    path: Path | None  # None: the registry has no such model (a first release)
    described: str  # "models:/NAME version 3 (alias staging)" or the file's name
    missing: str = ""


def check_registry(spec: BaselineSpec) -> Any:
    """The registry a models:/ baseline comes from, answering; checked when the session starts, so
    that a registry that is down fails in seconds rather than after the whole gate."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise GateError(f"--gate-baseline {spec.text} needs MLFLOW_TRACKING_URI (the registry to read it from)")

    registry = Registry(uri, model_name=spec.name or "", experiment="", alias=spec.alias or "")
    try:
        registry.check_reachable()
    except PublishError as exc:
        raise GateError(f"baseline {spec.text}: {exc}") from None
    return registry


def fetch(spec: BaselineSpec, dest: Path) -> Fetched:
    """The baseline's ONNX file; a missing model, version or alias is a first release, not an error;
    an unreachable registry is a GateError naming its URI without credentials."""
    if spec.file is not None:
        return Fetched(spec.file, spec.file.name)
    from mlflow.exceptions import MlflowException

    registry = check_registry(spec)
    client = registry.client
    try:
        if spec.alias:
            version = client.get_model_version_by_alias(spec.name, spec.alias)
        else:
            version = client.get_model_version(spec.name, spec.version)
    except MlflowException as exc:
        if getattr(exc, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return Fetched(None, spec.text, missing=f"the registry at {registry.display_uri} has no {spec.text}")
        raise GateError(redact(f"baseline {spec.text}: MLflow at {registry.display_uri} refused: "
                               f"{first_line(exc)[:300]}")) from None
    import mlflow

    dest.mkdir(parents=True, exist_ok=True)
    try:
        folder = Path(mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{spec.name}/{version.version}", dst_path=str(dest), tracking_uri=registry.tracking_uri))
    except Exception as exc:  # the artifact store behind the registry: one line, no credentials
        first = first_line(exc)[:300]
        raise GateError(redact(f"baseline {spec.text}: downloading version {version.version} from "
                               f"{registry.display_uri} failed ({type(exc).__name__}: {first})")) from None
    files = sorted(folder.rglob("*.onnx"))
    if not files:
        raise GateError(f"baseline {spec.text} (version {version.version}) holds no .onnx file")
    alias = f" (alias {spec.alias})" if spec.alias else ""
    return Fetched(files[0], f"models:/{spec.name} version {version.version}{alias}")
