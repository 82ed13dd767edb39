"""One gate run: the configured model, its ONNX artifact, runners over both, and what the checks
found. Fixtures read from it; reports and publishing consume the same values the tests assert on."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.compare import ParityResult, compare_outputs
from harness.config import GateConfig
from harness.errors import ArtifactError
from harness.export import ArtifactInfo, export_onnx, inspect_onnx
from harness.ledger import CHECKS, Ledger, Verdict
from harness.runners import OrtRunner, TorchRunner
from harness.strategies import InputCase

if TYPE_CHECKING:
    import numpy as np
    from torch import nn


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(2)


@dataclass
class OutputErrors:
    """Parity errors of one output over every example the parity checks ran."""

    max_abs: list[float] = field(default_factory=list)
    mean_abs: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, float | int]:
        if not self.max_abs:
            return {"examples": 0}
        return {
            "examples": len(self.max_abs),
            "max_abs": max(self.max_abs),
            "mean_abs": sum(self.mean_abs) / len(self.mean_abs),
            "worst_example_mean_abs": max(self.mean_abs),
        }


class GateSession:
    def __init__(
        self,
        config: GateConfig,
        *,
        work_dir: Path | None = None,
        run_id: str | None = None,
        model: nn.Module | None = None,
    ) -> None:
        self.config = config
        self.work_dir = work_dir
        self.run_id = run_id or new_run_id()
        self.report_dir = config.report_dir / self.run_id
        self.started = time.time()
        self.ledger = Ledger()
        self.verdict: Verdict | None = None
        self.artifact: ArtifactInfo | None = None
        self.artifact_error: str | None = None
        self.parity_errors: dict[str, OutputErrors] = {name: OutputErrors() for name in config.outputs}
        self.parity_examples = 0
        self.parity_failures: list[str] = []
        self.extra: dict[str, Any] = {}
        self._model = model

    # --- what is under test ----------------------------------------------------------------

    @property
    def model(self) -> nn.Module:
        if self._model is None:
            from harness.models.loader import build_model

            self._model = build_model(
                self.config.model, self.config.model_kwargs, self.config.checkpoint, self.config.search_dirs
            )
        return self._model

    def prepare(self) -> None:
        """Build the model (errors propagate: the gate cannot start) and produce the artifact
        (errors are recorded: a defective ONNX fails the gate's artifact check, it does not crash)."""
        model = self.model
        try:
            if self.config.onnx is not None:
                self.artifact = inspect_onnx(self.config.onnx, "given")
            else:
                if self.work_dir is None:
                    raise ArtifactError("no working folder to export into")
                self.work_dir.mkdir(parents=True, exist_ok=True)
                path = self.work_dir / "model.onnx"
                seconds = export_onnx(model, self.config, path)
                self.artifact = inspect_onnx(path, self.config.exporter, seconds)
        except ArtifactError as exc:
            self.artifact_error = str(exc)

    @property
    def required_checks(self) -> tuple[str, ...]:
        required = [c for c in CHECKS if c != "invariants" or self.config.invariants]
        if not self.config.dims:
            required = [c for c in required if c not in ("dynamic_dims", "batch_consistency")]
        return tuple(required) + tuple(self.extra.get("required_extra", ()))

    @property
    def batch_dim(self) -> str | None:
        """The batch dimension: by convention the first symbolic axis of the first input."""
        for spec in self.config.inputs:
            if spec.symbolic_dims:
                return spec.symbolic_dims[0]
        return None

    def pinned_batches(self) -> list[int]:
        """Batch sizes parity always covers: 1, 2 and one besides the trace size."""
        if self.batch_dim is None:
            return []
        dim = self.config.dims[self.batch_dim]
        wanted = {1, 2, dim.trace + 1 if dim.trace + 1 <= dim.high else dim.low}
        return sorted(s for s in wanted if dim.low <= s <= dim.high)

    # --- runners -------------------------------------------------------------------------------

    def _names(self) -> tuple[list[str], list[str]]:
        return [spec.name for spec in self.config.inputs], list(self.config.outputs)

    @cached_property
    def torch_runner(self) -> TorchRunner:
        return TorchRunner(self.model, *self._names())

    @cached_property
    def ort_runner(self) -> OrtRunner:
        return self.new_ort_runner()

    def new_ort_runner(self, **options: Any) -> OrtRunner:
        if self.artifact is None:
            raise ArtifactError(self.artifact_error or "no ONNX artifact")
        return OrtRunner(self.artifact.path, *self._names(), **options)

    # --- parity ----------------------------------------------------------------------------------

    def check_parity(self, case: InputCase) -> ParityResult:
        feeds = case.materialize(self.config.inputs)
        expected = self.torch_runner.infer(feeds)
        actual = self.ort_runner.infer(feeds)
        result = compare_outputs(
            actual, expected, self.config,
            candidate=self.ort_runner.name, reference=self.torch_runner.name, context=describe_case(case),
        )  # fmt: skip
        self.parity_examples += 1
        for comparison in result:
            errors = self.parity_errors.setdefault(comparison.output, OutputErrors())
            errors.max_abs.append(comparison.max_abs)
            errors.mean_abs.append(comparison.mean_abs)
        if not result and len(self.parity_failures) < 20:
            self.parity_failures.append(str(result).splitlines()[0])
        return result

    def parity_summary(self) -> dict[str, Any]:
        return {
            "examples": self.parity_examples,
            "outputs": {name: errors.summary() for name, errors in self.parity_errors.items()},
            "tolerance": {name: self.config.tolerance_for(name).__dict__ for name in self.config.outputs},
        }


def describe_case(case: InputCase) -> str:
    sizes = ", ".join(f"{k}={v}" for k, v in case.sizes.items())
    return f"{case.family} inputs ({sizes}, seed={case.seed})"

