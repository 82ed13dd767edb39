"""The gate's configuration as frozen values: what each setting means and its default. Read and
checked by harness/core/config/validate.py, its sources merged by harness/core/config/sources.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from harness.core.candidate_settings import CandidatesConfig
from harness.core.runner_kinds import PYTORCH, backends

DEFAULT_MODEL = "harness.models:localization_net"
# The built-in publish targets by short name, and their modules (harness/publish/targets.py).
TARGETS = {
    "s3+mlflow": "harness.publish.s3_mlflow",  # an S3 bucket the gate writes, MLflow's registry points at it
    "mlflow": "harness.publish.mlflow_only",  # MLflow alone: the artifact in MLflow's own artifact store
}
DEFAULT_TARGET = "s3+mlflow"
EXPORTERS = ("dynamo", "torchscript")
# Opsets each exporter can emit; dynamo translates at >= 18 and converts nothing below.
OPSET_RANGES = {"dynamo": range(18, 24), "torchscript": range(7, 21)}
DTYPES = ("float32", "float64", "float16", "int64", "int32", "int8", "uint8", "bool")
DEFAULT_TRACE_SIZE = 2
# The PyTorch GPU paths an ONNX Runtime GPU runner is measured against: eager, and a CUDA graph.
GPU_BASELINES = backends("cuda", PYTORCH)  # budget.min_gpu_speedup's keys

# The default model's description, used whole when no other model is configured.
LOCALIZATION_NET_SECTION: dict[str, Any] = {
    "model": DEFAULT_MODEL,
    "model_kwargs": {"size": "tiny"},
    "inputs": [
        {
            "name": "mel_spectrogram",
            "shape": ["batch", 3, 128, 32],
            "dtype": "float32",
            "range": [-4.0, 4.0],
            "dims": {"batch": [1, 8]},
        }
    ],
    "outputs": ["positions", "uncertainties"],
    "invariants": [{"output": "uncertainties", "min": 0.01, "max": 1.0}],
}


@dataclass(frozen=True)
class DimSpec:
    """A symbolic (dynamic) dimension: the sizes it may take and the size the export traces at."""

    name: str
    low: int
    high: int
    trace: int

    def sizes_besides_trace(self, count: int) -> list[int]:
        """Up to ``count`` distinct sizes spread over [low, high], none equal to the trace size."""
        candidates = [s for s in range(self.low, self.high + 1) if s != self.trace]
        if len(candidates) <= count:
            return candidates
        step = (len(candidates) - 1) / (count - 1)
        return sorted({candidates[round(i * step)] for i in range(count)})


PADDING_SIDES = ("right", "left", "both", "none")
MASK_MARKS = ("valid", "padding")


@dataclass(frozen=True)
class MaskSpec:
    """A padding mask over one symbolic dimension: which positions of a sequence hold data.

    Real callers pad a batch to its longest sequence: on the right (a valid prefix) or on the left
    (a valid suffix, as batched generation does), with at least ``min_valid`` positions valid.
    """

    dim: str
    padding: str = "right"  # "right", "left", "both" (each case draws a side) or "none" (all valid)
    min_valid: int = 1
    marks: str = "valid"  # what a true / 1 marks: "valid" (attention_mask) or "padding" (key_padding_mask)


@dataclass(frozen=True)
class LengthsSpec:
    """An integer input holding, per batch row, how many positions of ``dim`` are valid."""

    dim: str
    min_valid: int = 1


@dataclass(frozen=True)
class PadSpec:
    """The value an input holds where ``dim``'s mask or lengths mark positions as padding."""

    dim: str
    value: float = 0.0


@dataclass(frozen=True)
class Padding:
    """How the positions of one symbolic dimension are padded in every input case."""

    dim: str
    side: str
    min_valid: int


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple[int | str, ...]
    dtype: str
    low: float
    high: float
    mask: MaskSpec | None = None
    lengths: LengthsSpec | None = None
    pad: PadSpec | None = None
    may_be_ignored: bool = False

    @property
    def is_float(self) -> bool:
        return self.dtype.startswith("float")

    @property
    def structural(self) -> bool:
        """A mask or lengths input: its values come from the padding layout, not a family."""
        return self.mask is not None or self.lengths is not None

    @property
    def symbolic_dims(self) -> tuple[str, ...]:
        """The dimensions drawn for this input; a sum such as ``"past_sequence + sequence"`` is
        not drawn but follows its parts (derived_parts)."""
        return tuple(d for d in self.shape if isinstance(d, str) and not derived_parts(d))

    def concrete_shape(self, sizes: Mapping[str, int]) -> tuple[int, ...]:
        return tuple(size_of(d, sizes) if isinstance(d, str) else d for d in self.shape)


def derived_parts(dim: str) -> tuple[str, ...]:
    """The symbolic dimensions a derived one sums, e.g. a decoder's attention mask that spans the
    cache and the new tokens, ``"past_sequence + sequence"``; () for a plain one."""
    parts = tuple(part.strip() for part in dim.split("+"))
    return parts if len(parts) > 1 else ()


def size_of(dim: str, sizes: Mapping[str, int]) -> int:
    """A symbolic dimension's size: its own, or the sum of its parts' sizes."""
    parts = derived_parts(dim)
    return sum(sizes[part] for part in parts) if parts else sizes[dim]


@dataclass(frozen=True)
class Tolerance:
    """Parity bounds for one output: elementwise |a-b| <= atol + rtol*|b| and mean |a-b| < mae."""

    atol: float = 1e-5
    rtol: float = 1e-3
    mae: float = 1e-5
    # ONNX error vs fp64 must stay within noise_factor x PyTorch's own fp32 error; 0 turns it off.
    noise_factor: float = 16.0
    # Inputs outside the declared range are stress inputs: every bound above is multiplied by this
    # for them (> 1 looser, < 1 stricter).
    out_of_range_scale: float = 1.0
    # Findings about the model itself; they block only when asked to (NaN/Inf does by default).
    block_on_unstable: bool = False
    allow_non_finite: bool = False

    def describe(self) -> str:
        return f"atol={self.atol:g} rtol={self.rtol:g} mae<{self.mae:g}"


@dataclass(frozen=True)
class Invariant:
    """A property every value of an output must satisfy, whatever the input."""

    output: str
    min: float | None = None
    max: float | None = None

    def describe(self) -> str:
        low = "-inf" if self.min is None else f"{self.min:g}"
        high = "inf" if self.max is None else f"{self.max:g}"
        return f"{self.output} within [{low}, {high}]"


@dataclass(frozen=True)
class BenchConfig:
    batches: tuple[int, ...] = (1, 8, 32)
    threads: int = 0  # 0: one per physical core the process may use
    max_ratio_regression: float = 0.10  # `compare`'s effect-size floor: the smallest change that counts
    significance: float = 0.05  # `compare`'s intervals are 1 - significance
    latency_regression_fails: bool = False  # absolute latencies gate `compare` too (same machine only)


@dataclass(frozen=True)
class BudgetConfig:
    # ORT vs PyTorch on the CPU, per batch size; `default_speedup` for batches not listed. The
    # built-in 0.5 only catches a broken export: correct ones measured 0.76x (batch 32, 16 cores)
    # to 2.7x (batch 1, 2 cores). Anything tighter depends on the machine and is the user's call.
    default_speedup: float = 0.5
    per_batch_speedup: Mapping[int, float] = field(default_factory=dict)
    # {"cpu": {1: 30.0}, "cuda": {1: 5.0}}: p95 latency ceilings in ms, per device and batch.
    max_latency_ms: Mapping[str, Mapping[int, float]] = field(default_factory=dict)
    default_speedup_set: bool = False  # the config named min_speedup for every batch
    # Best ONNX Runtime GPU runner vs a PyTorch GPU baseline (GPU_BASELINES), per batch; the key
    # None holds the floor for every measured batch. No built-in default: GPU ratios depend on
    # the GPU, so a floor exists only where the config sets one.
    min_gpu_speedup: Mapping[str, Mapping[int | None, float]] = field(default_factory=dict)
    # With --gate-baseline: the candidate may be at most this fraction slower than production
    # (candidate / production median - 1, per batch, rounds alternating in one session). None: not judged.
    max_slowdown_vs_baseline: float | None = None

    def min_speedup(self, batch: int) -> float:
        return self.per_batch_speedup.get(batch, self.default_speedup)

    @property
    def has_gpu_limits(self) -> bool:
        return bool(self.min_gpu_speedup or self.max_latency_ms.get("cuda"))

    def gpu_speedup_floor(self, baseline: str, batch: int) -> float | None:
        floors = self.min_gpu_speedup.get(baseline, {})
        return floors.get(batch, floors.get(None))

    def speedup_source(self, batch: int) -> str:
        user_set = batch in self.per_batch_speedup or self.default_speedup_set
        return "limit set in config" if user_set else "built-in default"


@dataclass(frozen=True)
class PublishConfig:
    bucket: str = "heimdall-models"
    prefix: str = "models/localization"
    model_name: str = "heimdall-localization-onnx"
    experiment: str = "onnx-gate"
    alias: str = "staging"
    # Add versions to a registered model whose versions hold another model config (publish/naming.py).
    allow_config_change: bool = False
    name_given: bool = False  # model_name came from a config, not from the default above
    # Where to publish: a built-in target (harness/publish/targets.py) or a module's dotted path.
    target: str = DEFAULT_TARGET


@dataclass(frozen=True)
class PaddedOutput:
    """An output whose positions along ``axis`` count only where input ``by`` marks them valid."""

    output: str
    by: str  # a mask input or a lengths input
    axis: int
    batch_axis: int = 0


FEED_RULES = ("argmax", "extend", "advance", "next", "same")


@dataclass(frozen=True)
class StatePair:
    """A state the model carries across calls: the output whose value is the next call's ``input``.
    ``grows``: the symbolic dimension a cache grows along (by the step's length each call); None
    for a state of fixed size (a recurrent ``h``)."""

    input: str
    output: str
    grows: str | None = None


@dataclass(frozen=True)
class FeedRule:
    """How a call's non-state input is made from the step before it.

    - ``argmax``: the greedy token, the argmax of ``source`` (an output) over its last axis at the
      last position, as [batch, 1]: decoding;
    - ``extend``: one more column of ones on the last axis: an attention mask over cache + tokens;
    - ``advance``: the last column plus one, as [batch, 1]: position ids;
    - ``next``: a fresh draw from the input's declared range, at the step's sizes: the next frame
      of a stream;
    - ``same``: the first call's value again (a speaker embedding, a sampling temperature)."""

    input: str
    rule: str
    source: str | None = None


@dataclass(frozen=True)
class RolloutConfig:
    """Rollout parity (harness/checks/rollout.py): the pairs of state, how each call's other inputs
    are made, and how many calls a rollout makes."""

    states: tuple[StatePair, ...] = ()
    feeds: tuple[FeedRule, ...] = ()
    steps: int = 16
    examples: int = 4  # Hypothesis rollouts per session besides the full-length one

    @property
    def declared(self) -> bool:
        return bool(self.states)

    def summary(self) -> dict[str, Any]:
        return {
            "states": [vars(pair) for pair in self.states],
            "feeds": {rule.input: rule.rule + (f"({rule.source})" if rule.source else "") for rule in self.feeds},
            "steps": self.steps,
        }


@dataclass(frozen=True)
class GateConfig:
    model: str
    model_kwargs: Mapping[str, Any]
    inputs: tuple[InputSpec, ...]
    outputs: tuple[str, ...]
    dims: Mapping[str, DimSpec]
    checkpoint: Path | None = None
    onnx: Path | None = None
    exporter: str = "dynamo"
    opset: int = 18
    tolerance: Tolerance = Tolerance()
    per_output: Mapping[str, Tolerance] = field(default_factory=dict)
    invariants: tuple[Invariant, ...] = ()
    report_dir: Path = Path("reports")
    bench: BenchConfig = BenchConfig()
    budget: BudgetConfig = BudgetConfig()
    publish: PublishConfig = PublishConfig()
    candidates: CandidatesConfig = CandidatesConfig()
    sources: tuple[str, ...] = ()
    # Folders a user's model module may sit in: where the config files are, and the invocation.
    search_dirs: tuple[Path, ...] = ()
    padding: Mapping[str, Padding] = field(default_factory=dict)
    padded_outputs: Mapping[str, PaddedOutput] = field(default_factory=dict)
    # Real inputs: .npz files (resolved paths) or one "module:callable" returning batches.
    samples: tuple[Path, ...] | str = ()
    block_on_ignored_inputs: bool = False
    # Every aligned module's output against its own float64 noise (harness/checks/module_parity.py).
    module_parity: bool = True
    # Models that carry state across calls: the state pairs and how a rollout feeds each call.
    rollout: RolloutConfig = RolloutConfig()

    def tolerance_for(self, output: str) -> Tolerance:
        return self.per_output.get(output, self.tolerance)

    @property
    def trace_sizes(self) -> dict[str, int]:
        return {name: dim.trace for name, dim in self.dims.items()}

    def summary(self) -> dict[str, Any]:
        """A flat, secret-free description for reports and MLflow params."""
        return {
            "model": self.model,
            "model_kwargs": dict(self.model_kwargs),
            "checkpoint": str(self.checkpoint) if self.checkpoint else None,
            "onnx": str(self.onnx) if self.onnx else None,
            "exporter": self.exporter,
            "opset": self.opset,
            "inputs": [
                {"name": i.name, "shape": list(i.shape), "dtype": i.dtype, "range": [i.low, i.high]}
                | ({"mask": vars(i.mask)} if i.mask else {})
                | ({"lengths": vars(i.lengths)} if i.lengths else {})
                | ({"pad": vars(i.pad)} if i.pad else {})
                for i in self.inputs
            ],
            "padded_outputs": {k: vars(v) for k, v in self.padded_outputs.items()},
            "samples": self.samples if isinstance(self.samples, str) else [p.name for p in self.samples],
            "outputs": list(self.outputs),
            "dims": {n: [d.low, d.high, d.trace] for n, d in self.dims.items()},
            "tolerance": self.tolerance.__dict__,
            "per_output": {k: v.__dict__ for k, v in self.per_output.items()},
            "invariants": [i.describe() for i in self.invariants],
            "module_parity": self.module_parity,
            **({"rollout": self.rollout.summary()} if self.rollout.declared else {}),
            "sources": list(self.sources),
        }
