"""The Python entry point for training scripts: the original design's export_and_register_model,
running the same gate in-process for a model object."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

if TYPE_CHECKING:
    from torch import nn

    from harness.outcome import GateOutcome
    from harness.publish.outcome import PublishOutcome


@dataclass
class GateResult:
    success: bool  # the gate passed and, when asked, the model was published
    reason: str
    exit_code: int
    verdict: str | None = None
    sha256: str | None = None
    parity: dict[str, Any] = field(default_factory=dict)
    latency: list[dict[str, Any]] = field(default_factory=list)
    report_path: Path | None = None
    publish: PublishOutcome | None = None  # what the publish target said, when asked to publish

    # Where the model went, as the publish outcome says (None without a publish).
    @property
    def location(self) -> str | None:
        """Where the artifact's bytes are: an s3:// URI (target s3+mlflow) or MLflow's artifact URI."""
        return self.publish.location if self.publish else None

    @property
    def s3_uri(self) -> str | None:
        """The artifact's location, named as before publish targets: an s3:// URI for s3+mlflow."""
        return self.location

    @property
    def registered_name(self) -> str | None:
        return self.publish.registered_name if self.publish else None

    @property
    def version(self) -> str | None:
        return self.publish.version if self.publish else None

    @property
    def alias(self) -> str | None:
        return self.publish.alias if self.publish else None


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
    from harness.profiles import with_gate_run_profile

    request = ApiRequest(model, config_overrides or {}, {"training_run_id": run_id} if run_id else {})
    args = with_gate_run_profile([*gate_test_paths(), *pytest_args])
    if publish:
        args.append("--gate-publish")
    exit_code = int(pytest.main(args, plugins=[request]))
    if request.outcome is None:
        return GateResult(False, f"the gate did not run (pytest exit status {exit_code}); see its output", exit_code)
    return _result(request.outcome, exit_code)


def _result(outcome: GateOutcome, exit_code: int) -> GateResult:
    verdict, published = outcome.verdict, outcome.publish
    return GateResult(
        success=outcome.passed and exit_code == 0,
        reason=str(verdict) if not verdict else (str(published) if published is not None else str(verdict)),
        exit_code=exit_code,
        verdict="passed" if verdict else "failed",
        sha256=outcome.artifact.sha256 if outcome.artifact else None,
        parity=dict(outcome.parity),
        latency=[r.to_dict() for r in outcome.latency],
        report_path=outcome.report_dir / "summary.md",
        publish=published,
    )  # fmt: skip
