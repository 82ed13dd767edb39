"""The gate's configuration: read once, validated up front, then passed around as frozen values.

Sources, later ones winning: built-in defaults (Heimdall's LocalizationNet), ``[tool.onnx-gate]``
in the nearest pyproject.toml, a TOML file given with ``--gate-config``, command-line options.
"""

from __future__ import annotations

import difflib
import math
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from harness.core.candidate_settings import CandidatesConfig, parse_candidates
from harness.core.errors import ConfigError
from harness.core.runner_kinds import PYTORCH, backends

DEFAULT_MODEL = "harness.models:localization_net"
# The built-in publish targets by short name, and their modules (harness/publish/targets.py).
TARGETS = {
    "s3+mlflow": "harness.publish.s3_mlflow",  # an S3 bucket the gate writes, MLflow's registry points at it
    "mlflow": "harness.publish.mlflow_only",  # MLflow alone: the artifact in MLflow's own artifact store
}
DEFAULT_TARGET = "s3+mlflow"
# The config keys a command-line option overrides (pytest's --gate-* options, `onnx-gate debug`):
# option -> (config key, metavar).
OVERRIDE_OPTIONS = {
    "--gate-model": ("model", "MODULE:CALLABLE"), "--gate-checkpoint": ("checkpoint", "FILE"),
    "--gate-onnx": ("onnx", "FILE"), "--gate-exporter": ("exporter", "NAME"), "--gate-opset": ("opset", "N"),
    "--gate-report-dir": ("report_dir", "DIR"),
}  # fmt: skip
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
        return tuple(d for d in self.shape if isinstance(d, str))

    def concrete_shape(self, sizes: Mapping[str, int]) -> tuple[int, ...]:
        return tuple(sizes[d] if isinstance(d, str) else d for d in self.shape)


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
            "sources": list(self.sources),
        }


# --- reading -----------------------------------------------------------------------------------

TOP_KEYS = {
    "model", "model_kwargs", "checkpoint", "onnx", "exporter", "opset", "inputs", "outputs",
    "tolerance", "invariants", "report_dir", "bench", "budget", "publish", "padded_outputs",
    "samples", "block_on_ignored_inputs", "candidates", "module_parity",
}  # fmt: skip
INPUT_KEYS = {"name", "shape", "dtype", "range", "dims", "mask", "lengths", "pad", "may_be_ignored"}
MASK_KEYS = {"dim", "padding", "min_valid", "marks"}
LENGTHS_KEYS = {"dim", "min_valid"}
PAD_KEYS = {"dim", "value"}
PADDED_OUTPUT_KEYS = {"by", "axis", "batch_axis"}
TOLERANCE_NUMBERS = {"atol", "rtol", "mae", "noise_factor", "out_of_range_scale"}
TOLERANCE_SWITCHES = {"block_on_unstable", "allow_non_finite"}
TOLERANCE_KEYS = TOLERANCE_NUMBERS | TOLERANCE_SWITCHES
INVARIANT_KEYS = {"output", "min", "max"}
BENCH_KEYS = {"batches", "threads", "max_ratio_regression", "significance", "latency_regression_fails"}
BUDGET_KEYS = {"min_speedup", "max_latency_ms", "min_gpu_speedup", "max_slowdown_vs_baseline"}
PUBLISH_KEYS = {"bucket", "prefix", "model_name", "experiment", "alias", "allow_config_change", "target"}


def _check_keys(table: Mapping[str, Any], valid: set[str], where: str) -> None:
    for key in table:
        if key not in valid:
            close = difflib.get_close_matches(key, sorted(valid), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"unknown key {key!r} in {where}.{hint} Valid keys: {', '.join(sorted(valid))}"
            )


def _expect(value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    if isinstance(value, bool) and kind in (int, float, (int, float)):
        raise ConfigError(f"{what} must be a number, got {value!r}")
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigError(f"{what} must be {names}, got {value!r}")
    return value


def _number(value: Any, what: str, *, minimum: float = 0.0) -> float:
    _expect(value, (int, float), what)
    if not math.isfinite(value) or value < minimum:
        raise ConfigError(f"{what} must be a finite number >= {minimum:g}, got {value!r}")
    return float(value)


def read_toml_section(path: Path) -> dict[str, Any]:
    """The gate section of a TOML file: ``[tool.onnx-gate]`` if present, else the whole file."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from None
    tool = document.get("tool", {})
    if isinstance(tool, dict) and "onnx-gate" in tool:
        return _expect(tool["onnx-gate"], dict, f"[tool.onnx-gate] in {path.name}")
    _refuse_near_miss_tables(document, path)
    if path.name == "pyproject.toml":
        return {}
    return document


def _is_near_miss(name: str) -> bool:
    normal = name.lower().replace("_", "-").replace(".", "-")
    return name != "onnx-gate" and (normal in ("onnx-gate", "onnxgate") or bool(
        difflib.get_close_matches(normal, ["onnx-gate"], n=1, cutoff=0.8)
    ))  # fmt: skip


def _refuse_near_miss_tables(document: Mapping[str, Any], path: Path) -> None:
    """``[tool.onnx_gate]`` and the like would otherwise be ignored without a word, and the gate
    would check some other model than the one the table describes."""
    tool = document.get("tool", {})
    for name in tool if isinstance(tool, dict) else ():
        if _is_near_miss(name):
            raise ConfigError(f"{path.name} has a [tool.{name}] table. Did you mean [tool.onnx-gate]?")
    for name in document:
        if name.lower().replace("_", "-") in ("onnx-gate", "onnxgate", "tool-onnx-gate"):
            raise ConfigError(
                f"{path.name} has a [{name}] table. Did you mean [tool.onnx-gate], or the keys at the top level?"
            )


def find_pyproject(start: Path) -> Path | None:
    """The nearest pyproject.toml with a ``[tool.onnx-gate]`` table, from ``start`` upwards."""
    for directory in (start, *start.parents):
        candidate = directory / "pyproject.toml"
        if candidate.is_file() and read_toml_section(candidate):
            return candidate
    return None


def _resolve_path(value: Any, base: Path, what: str) -> Path | None:
    if value in (None, ""):
        return None
    path = Path(_expect(value, str, what)).expanduser()
    return path if path.is_absolute() else (base / path).resolve()


def _parse_dims(raw_inputs: list[Any]) -> dict[str, DimSpec]:
    ranges: dict[str, tuple[int, int]] = {}
    for raw in raw_inputs:
        for name, bounds in raw.get("dims", {}).items():
            what = f"dims.{name} of input {raw.get('name')!r}"
            if (
                not isinstance(bounds, list)
                or len(bounds) != 2
                or not all(isinstance(b, int) and not isinstance(b, bool) for b in bounds)
                or not 1 <= bounds[0] <= bounds[1]
            ):
                raise ConfigError(f"{what} must be [low, high] with 1 <= low <= high, got {bounds!r}")
            if name in ranges and ranges[name] != tuple(bounds):
                raise ConfigError(
                    f"symbolic dimension {name!r} has two ranges, {list(ranges[name])} and {bounds}"
                )
            ranges[name] = (bounds[0], bounds[1])
    dims: dict[str, DimSpec] = {}
    for raw in raw_inputs:
        for d in raw["shape"]:
            if isinstance(d, str) and d not in dims:
                low, high = ranges.get(d, (1, 16))
                # A dynamo export traced at size 1 specialises that dimension to 1.
                trace = min(max(DEFAULT_TRACE_SIZE, low), high)
                if high < 2:
                    raise ConfigError(
                        f"symbolic dimension {d!r} must allow a size >= 2 to stay dynamic, "
                        f"got range [{low}, {high}]"
                    )
                dims[d] = DimSpec(d, low, high, trace)
    unknown = set(ranges) - set(dims)
    if unknown:
        raise ConfigError(f"dims {sorted(unknown)} name no symbolic dimension of any input shape")
    return dims


def representable_range(low: float, high: float, dtype: str) -> tuple[float, float]:
    """``[low, high]`` rounded inward to values ``dtype`` holds exactly: a normalised image's
    [-2.1, 2.6] must not make Hypothesis (or a cast) step outside what the user declared."""
    import numpy as np

    if dtype.startswith(("int", "uint", "bool")):
        return float(math.ceil(low)), float(math.floor(high))
    kind = {"float16": np.float16, "float32": np.float32}.get(dtype)
    if kind is None:
        return low, high
    inward_low, inward_high = kind(low), kind(high)
    if float(inward_low) < low:
        inward_low = np.nextafter(inward_low, kind(np.inf))
    if float(inward_high) > high:
        inward_high = np.nextafter(inward_high, kind(-np.inf))
    return float(inward_low), float(inward_high)


def _table(raw: dict[str, Any], key: str, valid: set[str], where: str) -> dict[str, Any] | None:
    if key not in raw:
        return None
    value = raw[key]
    if not isinstance(value, dict):
        raise ConfigError(f"{where}.{key} must be a table like {key} = {{ {', '.join(sorted(valid))} }}, got {value!r}")
    _check_keys(value, valid, f"{where}.{key}")
    return value


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{what} must be an integer >= 0, got {value!r}")
    return value


def _choice(value: Any, valid: tuple[str, ...], what: str) -> str:
    if value not in valid:
        raise ConfigError(f"{what} must be one of {', '.join(map(repr, valid))}, got {value!r}")
    return value


def _default_dim(shape: list[Any], given: Any, what: str) -> str:
    """The symbolic dimension a mask or pad applies to: named, or the shape's last symbolic one."""
    symbolic = [d for d in shape if isinstance(d, str)]
    if given is None:
        if not symbolic:
            raise ConfigError(f"{what} needs a symbolic dimension in the input's shape to run along")
        return symbolic[-1]
    if not isinstance(given, str) or given not in symbolic:
        raise ConfigError(f"{what}.dim must name a symbolic dimension of the input's shape {shape}, got {given!r}")
    return given


def _parse_input(raw: Any, index: int) -> InputSpec:
    where = f"inputs[{index}]"
    _expect(raw, dict, where)
    _check_keys(raw, INPUT_KEYS, where)
    for key in ("name", "shape"):
        if key not in raw:
            raise ConfigError(f"{where} needs {key!r}")
    name = _expect(raw["name"], str, f"{where}.name")
    where = f"inputs[{index}] ({name!r})"
    shape = _expect(raw["shape"], list, f"{where}.shape")
    for d in shape:
        if isinstance(d, bool) or not isinstance(d, (int, str)) or (isinstance(d, int) and d < 0):
            raise ConfigError(
                f"{where}.shape entries must be sizes or symbolic names like 'batch', got {d!r}"
            )
    dtype = raw.get("dtype", "float32")
    if dtype not in DTYPES:
        raise ConfigError(f"{where}.dtype {dtype!r} is not supported; valid: {', '.join(DTYPES)}")
    value_range = raw.get("range", [-1.0, 1.0])
    if not isinstance(value_range, list) or len(value_range) != 2:
        raise ConfigError(f"{where}.range must be [low, high], two numbers, got {value_range!r}")
    low, high = (_number(v, f"{where}.range", minimum=-math.inf) for v in value_range)
    if low > high:
        raise ConfigError(f"{where}.range must be [low, high] with low <= high, got {[low, high]}")
    low, high = representable_range(low, high, dtype)
    if low > high:
        raise ConfigError(f"{where}.range {value_range} holds no {dtype} value; widen it")
    dims = raw.get("dims", {})
    if not isinstance(dims, dict):
        raise ConfigError(
            f"{where}.dims must be a table naming each symbolic dimension, "
            f"like dims = {{ batch = [1, 8] }}, got {dims!r}"
        )
    mask = lengths = pad = None
    if (table := _table(raw, "mask", MASK_KEYS, where)) is not None:
        if not dtype.startswith(("int", "uint", "bool")):
            raise ConfigError(f"{where} is a mask and must have an integer or bool dtype, got {dtype!r}")
        mask = MaskSpec(
            _default_dim(shape, table.get("dim"), f"{where}.mask"),
            _choice(table.get("padding", "right"), PADDING_SIDES, f"{where}.mask.padding"),
            _count(table.get("min_valid", 1), f"{where}.mask.min_valid"),
            _choice(table.get("marks", "valid"), MASK_MARKS, f"{where}.mask.marks"),
        )
        low, high = 0.0, 1.0
    if (table := _table(raw, "lengths", LENGTHS_KEYS, where)) is not None:
        if mask is not None:
            raise ConfigError(f"{where} cannot be both a mask and lengths; give it one of them")
        if not dtype.startswith(("int", "uint")):
            raise ConfigError(f"{where} holds lengths and must have an integer dtype, got {dtype!r}")
        if "dim" not in table or not isinstance(table["dim"], str):
            raise ConfigError(f"{where}.lengths needs dim, the symbolic dimension it counts, e.g. lengths = {{ dim = \"time\" }}")
        if len([d for d in shape if isinstance(d, str)]) > 1 or len(shape) != 1:
            raise ConfigError(f"{where} holds lengths: its shape must be one batch dimension like [\"batch\"], got {shape}")
        lengths = LengthsSpec(table["dim"], _count(table.get("min_valid", 1), f"{where}.lengths.min_valid"))
    if (table := _table(raw, "pad", PAD_KEYS, where)) is not None:
        if mask is not None or lengths is not None:
            raise ConfigError(f"{where}: pad applies to data inputs, not to a mask or lengths input")
        value = _number(table.get("value", 0), f"{where}.pad.value", minimum=-math.inf)
        pad = PadSpec(_default_dim(shape, table.get("dim"), f"{where}.pad"), value)
    may_be_ignored = _expect(raw.get("may_be_ignored", False), bool, f"{where}.may_be_ignored")
    return InputSpec(name, tuple(shape), dtype, low, high, mask, lengths, pad, may_be_ignored)


def _parse_padding(inputs: tuple[InputSpec, ...], dims: Mapping[str, DimSpec]) -> tuple[tuple[InputSpec, ...], dict[str, Padding]]:
    """One padding layout per masked dimension, agreed by every mask and lengths input on it.
    Lengths inputs get their real range: [min_valid, the dimension's largest size]."""
    padding: dict[str, Padding] = {}
    declared_by: dict[str, str] = {}
    for spec in inputs:
        if spec.mask is not None:
            dim, side, fewest = spec.mask.dim, spec.mask.padding, spec.mask.min_valid
        elif spec.lengths is not None:
            dim, side, fewest = spec.lengths.dim, "right", spec.lengths.min_valid
            if dim not in dims:
                raise ConfigError(
                    f"input {spec.name!r} counts lengths along {dim!r}, which is no symbolic dimension "
                    f"of any input; valid: {', '.join(dims) or 'none'}"
                )
        else:
            continue
        if fewest > dims[dim].high:
            raise ConfigError(
                f"input {spec.name!r} asks for min_valid = {fewest} positions along {dim!r}, "
                f"which is at most {dims[dim].high} long"
            )
        layout = Padding(dim, side, fewest)
        if dim in padding and padding[dim] != layout:
            raise ConfigError(
                f"inputs {declared_by[dim]!r} and {spec.name!r} describe the padding of {dim!r} differently "
                f"({padding[dim].side}, min_valid {padding[dim].min_valid} vs {side}, min_valid {fewest}); "
                "make them agree (lengths always pad on the right)"
            )
        padding[dim], declared_by[dim] = layout, spec.name
    for spec in inputs:
        if spec.pad is not None and spec.pad.dim not in padding:
            raise ConfigError(
                f"input {spec.name!r} has pad on {spec.pad.dim!r}, but no mask or lengths input describes "
                f"which positions of {spec.pad.dim!r} are padding; add mask = {{ dim = {spec.pad.dim!r} }} "
                "to the mask input"
            )
    resolved = tuple(
        replace(spec, low=float(spec.lengths.min_valid), high=float(dims[spec.lengths.dim].high))
        if spec.lengths is not None else spec
        for spec in inputs
    )  # fmt: skip
    return resolved, padding


def _parse_padded_outputs(raw: Any, inputs: tuple[InputSpec, ...], outputs: tuple[str, ...]) -> dict[str, PaddedOutput]:
    table = _expect(raw, dict, "padded_outputs")
    markers = {spec.name: spec for spec in inputs if spec.structural}
    parsed = {}
    for output, entry in table.items():
        where = f"padded_outputs.{output}"
        if output not in outputs:
            raise ConfigError(f"{where} names no output; outputs: {', '.join(outputs)}")
        _expect(entry, dict, where)
        _check_keys(entry, PADDED_OUTPUT_KEYS, where)
        by = entry.get("by")
        if by not in markers:
            raise ConfigError(
                f"{where}.by must name a mask or lengths input, got {by!r}; "
                f"valid: {', '.join(markers) or 'none (declare mask = {...} or lengths = {...} on an input)'}"
            )
        if "axis" not in entry:
            raise ConfigError(f"{where} needs axis, the output axis that runs along {by!r}'s positions")
        axis = _count(entry["axis"], f"{where}.axis")
        batch_axis = _count(entry.get("batch_axis", 0), f"{where}.batch_axis")
        if axis == batch_axis:
            raise ConfigError(f"{where}.axis and batch_axis are both {axis}; they must differ")
        parsed[output] = PaddedOutput(output, by, axis, batch_axis)
    return parsed


def _parse_samples(raw: Any, base_dir: Path) -> tuple[Path, ...] | str:
    """``samples = ["data/*.npz"]`` (paths and globs, relative to the config file) or
    ``samples = "package.module:callable"`` returning batches."""
    if raw is None:
        return ()
    if isinstance(raw, str) and ":" in raw and not raw.endswith(".npz"):
        if not all(raw.partition(":")[::2]):
            raise ConfigError(f"samples must look like 'package.module:callable', got {raw!r}")
        return raw
    entries = [raw] if isinstance(raw, str) else _expect(raw, list, "samples")
    files: list[Path] = []
    for entry in entries:
        pattern = _expect(entry, str, "samples entries")
        path = Path(pattern).expanduser()
        path = path if path.is_absolute() else base_dir / path
        matches = sorted(path.parent.glob(path.name)) if any(c in path.name for c in "*?[") else [path]
        matches = [m for m in matches if m.is_file()]
        if not matches:
            raise ConfigError(f"samples entry {pattern!r} matches no file (relative paths start at the config file)")
        for match in matches:
            if match.suffix != ".npz":
                raise ConfigError(f"sample file {match.name!r} is not a .npz file (numpy.savez with one array per input)")
        files.extend(matches)
    return tuple(dict.fromkeys(files))


def _parse_tolerance(raw: Any, where: str, base: Tolerance) -> Tolerance:
    _expect(raw, dict, where)
    _check_keys(raw, TOLERANCE_KEYS, where)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key in TOLERANCE_SWITCHES:
            values[key] = _expect(value, bool, f"{where}.{key}")
        else:
            values[key] = _number(value, f"{where}.{key}")
    if values.get("out_of_range_scale", 1.0) <= 0:
        raise ConfigError(f"{where}.out_of_range_scale must be > 0, got {values['out_of_range_scale']!r}")
    return replace(base, **values)


def _parse_budget(raw: Mapping[str, Any]) -> BudgetConfig:
    _check_keys(raw, BUDGET_KEYS, "budget")
    ceilings: dict[str, dict[int, float]] = {}
    for device, per_batch in _expect(raw.get("max_latency_ms", {}), dict, "budget.max_latency_ms").items():
        if device not in ("cpu", "cuda"):
            raise ConfigError(f"budget.max_latency_ms device {device!r} must be 'cpu' or 'cuda'")
        _expect(per_batch, dict, f"budget.max_latency_ms.{device}")
        ceilings[device] = {}
        for batch, ms in per_batch.items():
            if not str(batch).isdigit():
                raise ConfigError(f"budget.max_latency_ms.{device} keys must be batch sizes, got {batch!r}")
            ceilings[device][int(batch)] = _number(ms, f"budget.max_latency_ms.{device}.{batch}")
    raw_speedup = raw.get("min_speedup", BudgetConfig.default_speedup)
    if isinstance(raw_speedup, dict):
        floors = _ratio_floors(raw_speedup, "budget.min_speedup")
        per_batch = {batch: ratio for batch, ratio in floors.items() if batch is not None}
        default = floors.get(None, BudgetConfig.default_speedup)
    else:
        per_batch, default = {}, _number(raw_speedup, "budget.min_speedup")
    default_set = "min_speedup" in raw and (not isinstance(raw_speedup, dict) or "default" in raw_speedup)
    slowdown = raw.get("max_slowdown_vs_baseline")
    return BudgetConfig(default_speedup=default, per_batch_speedup=per_batch, max_latency_ms=ceilings,
                        default_speedup_set=default_set, min_gpu_speedup=_parse_gpu_speedup(raw),
                        max_slowdown_vs_baseline=None if slowdown is None else _number(
                            slowdown, "budget.max_slowdown_vs_baseline"))


def _ratio_floors(raw: Mapping[str, Any], where: str) -> dict[int | None, float]:
    """``{1 = 1.5, default = 0.9}`` -> {1: 1.5, None: 0.9}."""
    floors: dict[int | None, float] = {}
    for batch, ratio in raw.items():
        if batch == "default":
            floors[None] = _number(ratio, f"{where}.default")
        elif str(batch).isdigit():
            floors[int(batch)] = _number(ratio, f"{where}.{batch}")
        else:
            raise ConfigError(f"{where} keys must be batch sizes or 'default', got {batch!r}")
    return floors


def _parse_gpu_speedup(raw: Mapping[str, Any]) -> dict[str, dict[int | None, float]]:
    """``min_gpu_speedup = { pytorch-cuda-graph = 1.0, pytorch = { 1 = 2.0 } }``: per PyTorch
    baseline, a floor for every batch or per batch, in min_speedup's syntax."""
    where = "budget.min_gpu_speedup"
    table = raw.get("min_gpu_speedup", {})
    if not isinstance(table, dict):
        raise ConfigError(
            f"{where} must be a table naming the PyTorch GPU baseline, e.g. "
            f"{{ pytorch-cuda-graph = {table!r} }}; valid baselines: {', '.join(GPU_BASELINES)}"
        )
    floors: dict[str, dict[int | None, float]] = {}
    for baseline, value in table.items():
        if baseline not in GPU_BASELINES:
            close = difflib.get_close_matches(baseline, GPU_BASELINES, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{where} baseline {baseline!r} is not one of {', '.join(GPU_BASELINES)}.{hint}")
        if isinstance(value, dict):
            floors[baseline] = _ratio_floors(value, f"{where}.{baseline}")
        else:
            floors[baseline] = {None: _number(value, f"{where}.{baseline}")}
    return floors


def _parse_bench(raw: Mapping[str, Any]) -> BenchConfig:
    _check_keys(raw, BENCH_KEYS, "bench")
    batches = _expect(raw.get("batches", list(BenchConfig.batches)), list, "bench.batches")
    if not batches or not all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in batches):
        raise ConfigError(f"bench.batches must be a list of positive batch sizes, got {batches!r}")
    threads = raw.get("threads", 0)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise ConfigError(f"bench.threads must be an integer >= 0 (0: automatic), got {threads!r}")
    return BenchConfig(
        batches=tuple(batches),
        threads=threads,
        max_ratio_regression=_number(
            raw.get("max_ratio_regression", BenchConfig.max_ratio_regression),
            "bench.max_ratio_regression",
        ),
        significance=_significance(raw.get("significance", BenchConfig.significance)),
        latency_regression_fails=_expect(
            raw.get("latency_regression_fails", False), bool, "bench.latency_regression_fails"
        ),
    )


def _significance(value: Any) -> float:
    level = _number(value, "bench.significance")
    if not 0 < level < 0.5:
        raise ConfigError(f"bench.significance must lie in (0, 0.5), e.g. 0.05 for 95% intervals, got {value!r}")
    return level


def _default_bench_batches(
    defaults: tuple[int, ...], dims: Mapping[str, DimSpec], inputs: tuple[InputSpec, ...]
) -> tuple[int, ...]:
    batch = next((d for spec in inputs for d in spec.symbolic_dims), None)
    if batch is None:
        return defaults
    dim = dims[batch]
    return tuple(b for b in defaults if dim.low <= b <= dim.high) or (dim.low,)


def _check_bench_batches(bench: BenchConfig, dims: Mapping[str, DimSpec], inputs: tuple[InputSpec, ...]) -> None:
    """Given benchmark batches must lie in the batch dimension's declared range: timing a size the
    gate never verified would publish numbers for a model nobody checked at that size."""
    batch = next((d for spec in inputs for d in spec.symbolic_dims), None)
    if batch is None:
        return
    dim = dims[batch]
    outside = [b for b in bench.batches if not dim.low <= b <= dim.high]
    if outside:
        raise ConfigError(
            f"bench.batches {outside} lie outside the declared range of {batch!r}, [{dim.low}, {dim.high}]; "
            f"benchmark sizes within it, or widen dims.{batch}"
        )


def _parse_publish(raw: Mapping[str, Any]) -> PublishConfig:
    _check_keys(raw, PUBLISH_KEYS, "publish")
    raw = dict(raw)
    allow = _expect(raw.pop("allow_config_change", False), bool, "publish.allow_config_change")
    values = {k: _expect(v, str, f"publish.{k}") for k, v in raw.items()}
    for key, value in values.items():
        if not value.strip():
            raise ConfigError(f"publish.{key} must not be empty")
    if "target" in values:
        _check_target(values["target"])
    return PublishConfig(**values, allow_config_change=allow, name_given="model_name" in values)


def _check_target(target: str) -> None:
    """A built-in target's name, or a module's dotted path (a target of the user's own)."""
    if target in TARGETS or ("." in target and all(part.isidentifier() for part in target.split("."))):
        return
    close = difflib.get_close_matches(target, sorted(TARGETS), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(
        f"unknown publish.target {target!r}.{hint} Valid: {', '.join(repr(t) for t in TARGETS)}, or the dotted "
        "path of a module of your own that defines publish() and replace_reports()"
    )


def parse(
    section: Mapping[str, Any],
    base_dir: Path,
    sources: tuple[str, ...] = (),
    search_dirs: tuple[Path, ...] = (),
) -> GateConfig:
    """Validate a merged config section into a GateConfig. Raises ConfigError on the first fault."""
    _check_keys(section, TOP_KEYS, "[tool.onnx-gate]")
    model = _expect(section.get("model", DEFAULT_MODEL), str, "model")
    if ":" not in model or not all(model.partition(":")[::2]):
        raise ConfigError(f"model must look like 'package.module:callable', got {model!r}")
    if "inputs" not in section or not section["inputs"]:
        raise ConfigError(
            f"model {model!r} needs [[inputs]] tables (name, shape, dtype) describing its inputs"
        )
    raw_inputs = _expect(section["inputs"], list, "inputs")
    inputs = tuple(_parse_input(raw, i) for i, raw in enumerate(raw_inputs))
    names = [i.name for i in inputs]
    if len(set(names)) != len(names):
        raise ConfigError(f"input names must be unique, got {names}")
    outputs = tuple(_expect(section.get("outputs"), list, "outputs (the output names, in order)"))
    if not outputs or not all(isinstance(o, str) and o for o in outputs) or len(set(outputs)) != len(outputs):
        raise ConfigError(f"outputs must be a list of unique output names, got {list(outputs)!r}")

    exporter = section.get("exporter", "dynamo")
    if exporter not in EXPORTERS:
        raise ConfigError(f"unknown exporter {exporter!r}; valid exporters: {', '.join(EXPORTERS)}")
    opset = section.get("opset", 18)
    valid_opsets = OPSET_RANGES[exporter]
    if isinstance(opset, bool) or not isinstance(opset, int) or opset not in valid_opsets:
        raise ConfigError(
            f"opset {opset!r} is not supported by the {exporter} exporter; "
            f"valid: {valid_opsets.start}..{valid_opsets.stop - 1}"
        )

    tolerance = Tolerance()
    per_output: dict[str, Tolerance] = {}
    raw_tolerance = dict(_expect(section.get("tolerance", {}), dict, "tolerance"))
    raw_per_output = raw_tolerance.pop("per_output", {})
    tolerance = _parse_tolerance(raw_tolerance, "tolerance", tolerance)
    for output, raw in _expect(raw_per_output, dict, "tolerance.per_output").items():
        if output not in outputs:
            raise ConfigError(
                f"tolerance.per_output names {output!r}, which is not an output; outputs: {', '.join(outputs)}"
            )
        per_output[output] = _parse_tolerance(raw, f"tolerance.per_output.{output}", tolerance)

    invariants = []
    for i, raw in enumerate(_expect(section.get("invariants", []), list, "invariants")):
        _expect(raw, dict, f"invariants[{i}]")
        _check_keys(raw, INVARIANT_KEYS, f"invariants[{i}]")
        if raw.get("output") not in outputs:
            raise ConfigError(
                f"invariants[{i}].output must be one of {', '.join(outputs)}, got {raw.get('output')!r}"
            )
        bounds = {k: _number(raw[k], f"invariants[{i}].{k}", minimum=-math.inf) for k in ("min", "max") if k in raw}
        if not bounds:
            raise ConfigError(f"invariants[{i}] needs 'min' or 'max'")
        if bounds.keys() == {"min", "max"} and bounds["min"] > bounds["max"]:
            raise ConfigError(
                f"invariants[{i}] for {raw['output']!r} has min {bounds['min']:g} > max {bounds['max']:g}: "
                "no value could satisfy it; swap them"
            )
        invariants.append(Invariant(raw["output"], bounds.get("min"), bounds.get("max")))

    dims = _parse_dims(raw_inputs)
    inputs, padding = _parse_padding(inputs, dims)
    bench = _parse_bench(_expect(section.get("bench", {}), dict, "bench"))
    if "batches" in section.get("bench", {}):
        _check_bench_batches(bench, dims, inputs)
    else:  # the defaults are not the user's claim: keep those the model is declared (and checked) for
        bench = replace(bench, batches=_default_bench_batches(bench.batches, dims, inputs))
    return GateConfig(
        model=model,
        model_kwargs=dict(_expect(section.get("model_kwargs", {}), dict, "model_kwargs")),
        inputs=inputs,
        outputs=outputs,
        dims=dims,
        checkpoint=_resolve_path(section.get("checkpoint"), base_dir, "checkpoint"),
        onnx=_resolve_path(section.get("onnx"), base_dir, "onnx"),
        exporter=exporter,
        opset=opset,
        tolerance=tolerance,
        per_output=per_output,
        invariants=tuple(invariants),
        report_dir=_resolve_path(section.get("report_dir", "reports"), base_dir, "report_dir") or Path("reports"),
        bench=bench,
        budget=_parse_budget(_expect(section.get("budget", {}), dict, "budget")),
        publish=_parse_publish(_expect(section.get("publish", {}), dict, "publish")),
        candidates=parse_candidates(section.get("candidates"), outputs),
        sources=sources,
        search_dirs=search_dirs or (base_dir,),
        padding=padding,
        padded_outputs=_parse_padded_outputs(section.get("padded_outputs", {}), inputs, outputs),
        samples=_parse_samples(section.get("samples"), base_dir),
        block_on_ignored_inputs=_expect(section.get("block_on_ignored_inputs", False), bool, "block_on_ignored_inputs"),
        module_parity=_expect(section.get("module_parity", True), bool, "module_parity"),
    )


def _anchor_sample_paths(samples: str | list[Any], base_dir: Path) -> str | list[Any]:
    """Sample files (globs too) written in a layer resolve against that layer's folder."""
    if isinstance(samples, str) and ":" in samples and not samples.endswith(".npz"):
        return samples  # a callable
    entries = [samples] if isinstance(samples, str) else samples
    return [str(base_dir / e) if isinstance(e, str) and not Path(e).expanduser().is_absolute() else e for e in entries]


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key != "model_kwargs":
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


# Settings of the gate run rather than of a model: the only keys a layer describing one model
# may lend to a session gating another.
SESSION_KEYS = {"report_dir"}


@dataclass(frozen=True)
class Layer:
    """One source of settings, in precedence order: pyproject.toml < --gate-config file <
    command line < Python API."""

    source: str
    section: Mapping[str, Any]
    base_dir: Path
    from_file: bool = True
    must_name_model: bool = False

    @property
    def model(self) -> str | None:
        return self.section.get("model")


def _display(path: Path, invocation_dir: Path) -> str:
    """A path as a user reads it, relative to where they ran the gate when it lies below: reports
    and MLflow params carry no absolute path of the build machine."""
    try:
        return str(path.resolve().relative_to(invocation_dir.resolve()))
    except ValueError:
        return path.name


def _file_layers(invocation_dir: Path, config_file: Path | None) -> list[Layer]:
    layers = []
    pyproject = find_pyproject(invocation_dir)
    if pyproject:
        layers.append(Layer(
            f"{_display(pyproject, invocation_dir)} [tool.onnx-gate]", read_toml_section(pyproject), pyproject.parent,
        ))  # fmt: skip
    if config_file is not None:
        config_file = config_file if config_file.is_absolute() else invocation_dir / config_file
        if config_file.is_dir():
            raise ConfigError(f"--gate-config {str(config_file)!r} is a folder; give the TOML file in it")
        layers.append(Layer(
            _display(config_file, invocation_dir), read_toml_section(config_file), config_file.parent,
            must_name_model=True,
        ))  # fmt: skip
    return layers


def load(
    *,
    invocation_dir: Path,
    config_file: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    api_overrides: Mapping[str, Any] | None = None,
    model_object: bool = False,
    object_class: str | None = None,
) -> GateConfig:
    """Layer pyproject.toml, ``config_file``, ``overrides`` (the command line) and
    ``api_overrides`` (the Python API), later ones winning, into a GateConfig.

    A model's description never crosses to another model: a layer that names a model other than
    the one the highest model-naming layer names lends only the run's own settings (report_dir).
    A config file given with --gate-config must name its model; so must pyproject.toml's table
    unless a later layer does. With no layer at all, the built-in LocalizationNet is gated.
    Paths in a file resolve against that file's folder; paths in overrides against
    ``invocation_dir``. ``model_object``: the Python API was handed the model itself.

    ``object_class``: that object's class as ``module:QualName``, when it is not the built-in
    default's class. A model object is its own model: the built-in LocalizationNet's description
    (inputs, outputs, invariants) describes an instance of LocalizationNet, or any object when a
    layer names the default model. Any other object is described by the layers alone, and is
    labelled by its class where no layer names a model.
    """
    layers = _file_layers(invocation_dir, config_file)
    if overrides:
        layers.append(Layer("command line", dict(overrides), invocation_dir, from_file=False))
    if api_overrides:
        layers.append(Layer("Python API", dict(api_overrides), invocation_dir, from_file=False))
    for layer in layers:
        where = f"[tool.onnx-gate] of {layer.source}" if "[tool" in layer.source else layer.source
        _check_keys(layer.section, TOP_KEYS, where)
        if layer.must_name_model and not layer.model:
            raise ConfigError(
                f"config file {layer.source!r} names no model; add model = \"package.module:callable\" "
                f"(the gate would otherwise check its built-in LocalizationNet, not yours)"
            )

    naming = [index for index, layer in enumerate(layers) if layer.model]
    model = layers[naming[-1]].model if naming else None
    files = [layer for layer in layers if layer.from_file]
    if model is None and files and not model_object:
        raise ConfigError(
            f"{files[0].source} names no model; add model = \"package.module:callable\" "
            f"(the gate would otherwise check its built-in LocalizationNet, not yours)"
        )
    merged: dict[str, Any] = {}
    for index, layer in enumerate(layers):
        section = dict(layer.section)
        # A file below the layer that names the model describes its own model, or none: only the
        # run's settings cross over. Options given above it refine the named model.
        below = bool(naming) and index < naming[-1]
        if (layer.model is not None and layer.model != model) or (below and layer.from_file and layer.model != model):
            section = {k: v for k, v in section.items() if k in SESSION_KEYS}
        # Relative paths are anchored where they were written, before layers mix.
        for key in ("checkpoint", "onnx", "report_dir"):
            if section.get(key):
                section[key] = str(_resolve_path(section[key], layer.base_dir, key))
        if isinstance(section.get("samples"), (str, list)):
            section["samples"] = _anchor_sample_paths(section["samples"], layer.base_dir)
        merged = _merge(merged, section)
    if object_class is not None and model is None:
        if not merged.get("inputs") or not merged.get("outputs"):
            raise ConfigError(
                f"the model object handed to export_and_register_model ({object_class}) is not the built-in "
                "LocalizationNet, so it needs its own inputs = [...] and outputs = [...], in config_overrides "
                "or in [tool.onnx-gate]"
            )
        merged["model"] = object_class
    elif merged.get("model", DEFAULT_MODEL) == DEFAULT_MODEL:
        merged = _merge(LOCALIZATION_NET_SECTION, merged)
    sources = tuple(layer.source for layer in layers) or ("built-in defaults",)
    search_dirs = tuple(dict.fromkeys([*(layer.base_dir for layer in layers), invocation_dir]))
    return parse(merged, invocation_dir, sources, search_dirs)
