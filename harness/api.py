"""The Python entry point for training scripts: the original design's export_and_register_model,
running the same gate in-process for a model object."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

if TYPE_CHECKING:
    from torch import nn


@dataclass
class GateResult:
    success: bool  # the gate passed and, when asked, the model was published
    reason: str
    exit_code: int
    verdict: str | None = None
    s3_uri: str | None = None
    sha256: str | None = None
    registered_name: str | None = None
    version: str | None = None
    alias: str | None = None
    parity: dict[str, Any] = field(default_factory=dict)
    latency: list[dict[str, Any]] = field(default_factory=list)
    report_path: Path | None = None


def export_and_register_model(
    model: nn.Module,
    run_id: str | None = None,
    *,
    config_overrides: Mapping[str, Any] | None = None,
    publish: bool = True,
    pytest_args: Sequence[str] = (),
) -> GateResult:
    """Export ``model`` to ONNX, run the whole gate on it and, if it passed, publish it.

    * run_id: the training run (e.g. an MLflow run id), tagged on the registered version.
    * config_overrides: ``[tool.onnx-gate]`` keys to override (inputs, outputs, tolerance, ...).
    * publish: upload and register when the gate passed. Default: True.
    * pytest_args: more pytest arguments, e.g. ``["--gate-bench-quick"]``.

    Raises nothing for a gate or publish failure: ``result.success`` and ``result.reason`` say.
    """
    import pytest

    from harness.api_request import ApiRequest
    from harness.cli import gate_test_paths
    from harness.profiles import GATE_RUN_PROFILE

    request = ApiRequest(model, config_overrides or {}, {"training_run_id": run_id} if run_id else {})
    args = [*gate_test_paths(), *pytest_args]
    if not any(a.startswith("--hypothesis-profile") for a in args):
        args.append(f"--hypothesis-profile={GATE_RUN_PROFILE}")
    if publish:
        args.append("--gate-publish")
    exit_code = int(pytest.main(args, plugins=[request]))
    gate = request.gate
    if gate is None or gate.verdict is None:
        return GateResult(False, f"the gate did not run (pytest exit status {exit_code}); see its output", exit_code)
    outcome = gate.publish_outcome
    result = GateResult(
        success=bool(gate.verdict) and exit_code == 0 and (outcome is None or bool(outcome)),
        reason=str(gate.verdict) if not gate.verdict else (str(outcome) if outcome is not None else str(gate.verdict)),
        exit_code=exit_code,
        verdict="passed" if gate.verdict else "failed",
        sha256=gate.artifact.sha256 if gate.artifact else None,
        parity=gate.parity_summary(),
        latency=[r.to_dict() for r in gate.latency],
        report_path=gate.report_dir / "summary.md",
    )  # fmt: skip
    if outcome is not None:
        result.s3_uri, result.registered_name = outcome.s3_uri, outcome.registered_name
        result.version, result.alias = outcome.version, outcome.alias
    return result
