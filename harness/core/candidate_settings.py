"""``[tool.onnx-gate.candidates]``: which candidates to build, how reduced precision is judged,
and which candidate (if any) to publish. Validated up front like the rest of the config."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Mapping

from harness.core.errors import ConfigError

# kind -> (precision, what it is)
KINDS: dict[str, tuple[str, str]] = {
    "ort-basic": ("fp32", "ONNX Runtime offline graph optimisation, basic level (portable)"),
    "ort-extended": ("fp32", "ONNX Runtime offline graph optimisation, extended level (portable on the CPU EP)"),
    "ort-transformer": ("fp32", "onnxruntime.transformers fusions (attention, LayerNorm, GELU) for transformer models"),
    "fp16": ("fp16", "fp16 weights and compute, inputs and outputs kept in their original types"),
    "bf16": ("bf16", "bf16 weights and compute, inputs and outputs kept in their original types"),
    "int8-dynamic": ("int8", "int8 dynamic quantisation of MatMul/Gemm weights"),
    "int8-static": ("int8", "int8 static QDQ quantisation calibrated on the gate's input strategies"),
    "int8-mixed": ("int8", "int8 static QDQ with the nodes that cost the task budget most kept in fp32, "
                           "chosen by ablation on your samples"),
}
DEFAULT_KINDS = ("ort-basic", "ort-extended", "fp16", "bf16", "int8-dynamic", "int8-static")
METRICS = ("max_abs", "relative_l2", "cosine", "top1", "haversine_m")
FASTEST = "fastest-passing"
CANDIDATES_KEYS = {"build", "publish", "budget", "calibration_samples", "transformer"}
BUDGET_KEYS = {"metric", "output", "limit"}
TRANSFORMER_KEYS = {"model_type", "num_heads", "hidden_size"}


@dataclass(frozen=True)
class TaskBudget:
    """A task-level tolerance for reduced-precision candidates: ``metric`` of the candidate's
    ``output`` against PyTorch fp32's, per sample, within ``limit``."""

    metric: str  # one of METRICS, or "module:callable" returning an error (lower is better)
    output: str
    limit: float

    @property
    def higher_is_better(self) -> bool:
        return self.metric in ("cosine", "top1")

    def describe(self) -> str:
        relation = ">=" if self.higher_is_better else "<="
        return f"{self.metric}({self.output}) {relation} {self.limit:g}"


@dataclass(frozen=True)
class CandidatesConfig:
    build: tuple[str, ...] = ()
    publish: str | None = None  # None: the plain export is published; FASTEST; or a name in build
    budget: TaskBudget | None = None
    calibration_samples: int = 16
    transformer: Mapping[str, Any] | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.build)


def _check_keys(table: Mapping[str, Any], valid: set[str], where: str) -> None:
    for key in table:
        if key not in valid:
            close = difflib.get_close_matches(key, sorted(valid), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown key {key!r} in {where}.{hint} Valid keys: {', '.join(sorted(valid))}")


def _budget(raw: Any, outputs: tuple[str, ...]) -> TaskBudget:
    where = "candidates.budget"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table, e.g. {{ metric = \"cosine\", output = \"{outputs[0]}\", limit = 0.999 }}")
    _check_keys(raw, BUDGET_KEYS, where)
    missing = [k for k in ("metric", "limit") if k not in raw]
    if missing:
        raise ConfigError(f"{where} needs {', '.join(missing)}; metrics: {', '.join(METRICS)} or 'module:callable'")
    metric = raw["metric"]
    if not isinstance(metric, str) or (metric not in METRICS and ":" not in metric):
        close = difflib.get_close_matches(str(metric), METRICS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{where}.metric {metric!r} is not one of {', '.join(METRICS)} or 'module:callable'.{hint}")
    output = raw.get("output", outputs[0])
    if output not in outputs:
        raise ConfigError(f"{where}.output {output!r} is not an output; outputs: {', '.join(outputs)}")
    limit = raw["limit"]
    if isinstance(limit, bool) or not isinstance(limit, (int, float)) or not limit >= 0:
        raise ConfigError(f"{where}.limit must be a number >= 0, got {limit!r}")
    if metric in ("cosine", "top1") and not limit <= 1:
        raise ConfigError(f"{where}.limit for {metric} is a similarity in [0, 1], got {limit!r}")
    return TaskBudget(metric, output, float(limit))


def parse_candidates(raw: Any, outputs: tuple[str, ...]) -> CandidatesConfig:
    if raw is None:
        return CandidatesConfig()
    if not isinstance(raw, dict):
        raise ConfigError(f"candidates must be a table ([tool.onnx-gate.candidates]), got {raw!r}")
    _check_keys(raw, CANDIDATES_KEYS, "candidates")
    transformer = raw.get("transformer")
    if transformer is not None:
        if not isinstance(transformer, dict) or "model_type" not in transformer:
            raise ConfigError("candidates.transformer must be a table with model_type, e.g. { model_type = \"bert\" }")
        _check_keys(transformer, TRANSFORMER_KEYS, "candidates.transformer")
    default = DEFAULT_KINDS + (("ort-transformer",) if transformer else ())
    build = raw.get("build", list(default))
    if not isinstance(build, list) or not build or len(set(build)) != len(build):
        raise ConfigError(f"candidates.build must be a non-empty list of distinct kinds, got {build!r}")
    for kind in build:
        if kind not in KINDS:
            close = difflib.get_close_matches(str(kind), list(KINDS), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"candidates.build names {kind!r}, not a candidate kind.{hint} Valid: {', '.join(KINDS)}")
    if "ort-transformer" in build and not transformer:
        raise ConfigError("candidate 'ort-transformer' needs candidates.transformer = { model_type = \"bert\" } "
                          "(the onnxruntime.transformers model type: bert, gpt2, vit, ...)")
    publish = raw.get("publish")
    if publish is not None and publish != FASTEST and publish not in build:
        raise ConfigError(f"candidates.publish {publish!r} must be {FASTEST!r} or a candidate in build: {', '.join(build)}")
    samples = raw.get("calibration_samples", CandidatesConfig.calibration_samples)
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ConfigError(f"candidates.calibration_samples must be a positive integer, got {samples!r}")
    budget = _budget(raw["budget"], outputs) if "budget" in raw else None
    if "int8-mixed" in build and budget is None:
        raise ConfigError("candidate 'int8-mixed' chooses the nodes it keeps in fp32 by the task budget: declare "
                          "candidates.budget = { metric = ..., output = ..., limit = ... }")
    return CandidatesConfig(tuple(build), publish, budget, samples, dict(transformer) if transformer else None)
