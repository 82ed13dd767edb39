"""One config table checked up front and turned into a GateConfig: every key known, every value of
its type and range, every cross-reference (dims, masks, padded outputs, samples) resolved, each
problem one line (ConfigError)."""

from __future__ import annotations

import difflib
import math
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

from harness.core.candidate_settings import parse_candidates
from harness.core.config.schema import (
    DEFAULT_MODEL,
    DEFAULT_TRACE_SIZE,
    DTYPES,
    EXPORTERS,
    GPU_BASELINES,
    MASK_MARKS,
    OPSET_RANGES,
    PADDING_SIDES,
    TARGETS,
    BenchConfig,
    BudgetConfig,
    DimSpec,
    GateConfig,
    InputSpec,
    Invariant,
    LengthsSpec,
    MaskSpec,
    PaddedOutput,
    Padding,
    PadSpec,
    PublishConfig,
    derived_parts,
    Tolerance,
)
from harness.core.config.reading import check_keys, expect
from harness.core.config.state import expand_state
from harness.core.errors import ConfigError

# --- reading -----------------------------------------------------------------------------------

TOP_KEYS = {
    "model", "model_kwargs", "checkpoint", "onnx", "exporter", "opset", "inputs", "outputs",
    "tolerance", "invariants", "report_dir", "bench", "budget", "publish", "padded_outputs",
    "samples", "block_on_ignored_inputs", "candidates", "module_parity", "state", "rollout",
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


def _number(value: Any, what: str, *, minimum: float = 0.0) -> float:
    expect(value, (int, float), what)
    if not math.isfinite(value) or value < minimum:
        raise ConfigError(f"{what} must be a finite number >= {minimum:g}, got {value!r}")
    return float(value)


def resolve_path(value: Any, base: Path, what: str) -> Path | None:
    if value in (None, ""):
        return None
    path = Path(expect(value, str, what)).expanduser()
    return path if path.is_absolute() else (base / path).resolve()


def _parse_dims(raw_inputs: list[Any], growing: frozenset[str] = frozenset()) -> dict[str, DimSpec]:
    """The symbolic dimensions and their ranges. A cache's length (``growing``: a [[state]]'s
    ``grows``) may start at 0, the empty cache of a first call; any other dimension at 1."""
    ranges: dict[str, tuple[int, int]] = {}
    for raw in raw_inputs:
        for name, bounds in raw.get("dims", {}).items():
            what = f"dims.{name} of input {raw.get('name')!r}"
            lowest = 0 if name in growing else 1
            if (
                not isinstance(bounds, list)
                or len(bounds) != 2
                or not all(isinstance(b, int) and not isinstance(b, bool) for b in bounds)
                or not lowest <= bounds[0] <= bounds[1]
            ):
                starts_at_zero = lowest and isinstance(bounds, list) and bounds[:1] == [0]
                zero = " (0 only for a cache's length: a [[state]]'s grows dimension)" if starts_at_zero else ""
                raise ConfigError(f"{what} must be [low, high] with {lowest} <= low <= high, got {bounds!r}{zero}")
            if name in ranges and ranges[name] != tuple(bounds):
                raise ConfigError(
                    f"symbolic dimension {name!r} has two ranges, {list(ranges[name])} and {bounds}"
                )
            ranges[name] = (bounds[0], bounds[1])
    dims: dict[str, DimSpec] = {}
    for raw in raw_inputs:
        for d in raw["shape"]:
            if isinstance(d, str) and derived_parts(d):
                continue  # a sum of other dimensions: checked once they are all known
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
    for raw in raw_inputs:
        for d in raw["shape"]:
            missing = [part for part in (derived_parts(d) if isinstance(d, str) else ()) if part not in dims]
            if missing:
                raise ConfigError(
                    f"input {raw.get('name')!r}: the dimension {d!r} sums {missing[0]!r}, which no input has as a dimension of its own"
                )
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
    check_keys(value, valid, f"{where}.{key}")
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
    chosen = given if given is not None else (symbolic[-1] if symbolic else None)
    if given is None and chosen is None:
        raise ConfigError(f"{what} needs a symbolic dimension in the input's shape to run along")
    if not isinstance(chosen, str) or chosen not in symbolic:
        raise ConfigError(f"{what}.dim must name a symbolic dimension of the input's shape {shape}, got {given!r}")
    if derived_parts(chosen):
        raise ConfigError(
            f"{what} runs along {chosen!r}, a sum of dimensions, which a padding layout cannot be drawn over; "
            "for a decoder's mask over cache + tokens give range = [1, 1]: rollout parity pads the cache and the rows itself"
        )
    return chosen


def _parse_input(raw: Any, index: int) -> InputSpec:
    where = f"inputs[{index}]"
    expect(raw, dict, where)
    check_keys(raw, INPUT_KEYS, where)
    for key in ("name", "shape"):
        if key not in raw:
            raise ConfigError(f"{where} needs {key!r}")
    name = expect(raw["name"], str, f"{where}.name")
    where = f"inputs[{index}] ({name!r})"
    shape = expect(raw["shape"], list, f"{where}.shape")
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
    may_be_ignored = expect(raw.get("may_be_ignored", False), bool, f"{where}.may_be_ignored")
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
    table = expect(raw, dict, "padded_outputs")
    markers = {spec.name: spec for spec in inputs if spec.structural}
    parsed = {}
    for output, entry in table.items():
        where = f"padded_outputs.{output}"
        if output not in outputs:
            raise ConfigError(f"{where} names no output; outputs: {', '.join(outputs)}")
        expect(entry, dict, where)
        check_keys(entry, PADDED_OUTPUT_KEYS, where)
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
    entries = [raw] if isinstance(raw, str) else expect(raw, list, "samples")
    files: list[Path] = []
    for entry in entries:
        pattern = expect(entry, str, "samples entries")
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
    expect(raw, dict, where)
    check_keys(raw, TOLERANCE_KEYS, where)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key in TOLERANCE_SWITCHES:
            values[key] = expect(value, bool, f"{where}.{key}")
        else:
            values[key] = _number(value, f"{where}.{key}")
    if values.get("out_of_range_scale", 1.0) <= 0:
        raise ConfigError(f"{where}.out_of_range_scale must be > 0, got {values['out_of_range_scale']!r}")
    return replace(base, **values)


def _parse_budget(raw: Mapping[str, Any]) -> BudgetConfig:
    check_keys(raw, BUDGET_KEYS, "budget")
    ceilings: dict[str, dict[int, float]] = {}
    for device, per_batch in expect(raw.get("max_latency_ms", {}), dict, "budget.max_latency_ms").items():
        if device not in ("cpu", "cuda"):
            raise ConfigError(f"budget.max_latency_ms device {device!r} must be 'cpu' or 'cuda'")
        expect(per_batch, dict, f"budget.max_latency_ms.{device}")
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
    check_keys(raw, BENCH_KEYS, "bench")
    batches = expect(raw.get("batches", list(BenchConfig.batches)), list, "bench.batches")
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
        latency_regression_fails=expect(
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
    check_keys(raw, PUBLISH_KEYS, "publish")
    raw = dict(raw)
    allow = expect(raw.pop("allow_config_change", False), bool, "publish.allow_config_change")
    values = {k: expect(v, str, f"publish.{k}") for k, v in raw.items()}
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
    check_keys(section, TOP_KEYS, "[tool.onnx-gate]")
    model = expect(section.get("model", DEFAULT_MODEL), str, "model")
    if ":" not in model or not all(model.partition(":")[::2]):
        raise ConfigError(f"model must look like 'package.module:callable', got {model!r}")
    if "inputs" not in section or not section["inputs"]:
        raise ConfigError(
            f"model {model!r} needs [[inputs]] tables (name, shape, dtype) describing its inputs"
        )
    raw_inputs = expect(section["inputs"], list, "inputs")
    outputs = tuple(expect(section.get("outputs"), list, "outputs (the output names, in order)"))
    if not outputs or not all(isinstance(o, str) and o for o in outputs) or len(set(outputs)) != len(outputs):
        raise ConfigError(f"outputs must be a list of unique output names, got {list(outputs)!r}")
    raw_inputs, outputs, rollout = expand_state(section, raw_inputs, outputs)
    inputs = tuple(_parse_input(raw, i) for i, raw in enumerate(raw_inputs))
    names = [i.name for i in inputs]
    if len(set(names)) != len(names):
        raise ConfigError(f"input names must be unique, got {names}")

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
    raw_tolerance = dict(expect(section.get("tolerance", {}), dict, "tolerance"))
    raw_per_output = raw_tolerance.pop("per_output", {})
    tolerance = _parse_tolerance(raw_tolerance, "tolerance", tolerance)
    for output, raw in expect(raw_per_output, dict, "tolerance.per_output").items():
        if output not in outputs:
            raise ConfigError(
                f"tolerance.per_output names {output!r}, which is not an output; outputs: {', '.join(outputs)}"
            )
        per_output[output] = _parse_tolerance(raw, f"tolerance.per_output.{output}", tolerance)

    invariants = []
    for i, raw in enumerate(expect(section.get("invariants", []), list, "invariants")):
        expect(raw, dict, f"invariants[{i}]")
        check_keys(raw, INVARIANT_KEYS, f"invariants[{i}]")
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

    dims = _parse_dims(raw_inputs, frozenset(pair.grows for pair in rollout.states if pair.grows))
    inputs, padding = _parse_padding(inputs, dims)
    bench = _parse_bench(expect(section.get("bench", {}), dict, "bench"))
    if "batches" in section.get("bench", {}):
        _check_bench_batches(bench, dims, inputs)
    else:  # the defaults are not the user's claim: keep those the model is declared (and checked) for
        bench = replace(bench, batches=_default_bench_batches(bench.batches, dims, inputs))
    return GateConfig(
        model=model,
        model_kwargs=dict(expect(section.get("model_kwargs", {}), dict, "model_kwargs")),
        inputs=inputs,
        outputs=outputs,
        dims=dims,
        checkpoint=resolve_path(section.get("checkpoint"), base_dir, "checkpoint"),
        onnx=resolve_path(section.get("onnx"), base_dir, "onnx"),
        exporter=exporter,
        opset=opset,
        tolerance=tolerance,
        per_output=per_output,
        invariants=tuple(invariants),
        report_dir=resolve_path(section.get("report_dir", "reports"), base_dir, "report_dir") or Path("reports"),
        bench=bench,
        budget=_parse_budget(expect(section.get("budget", {}), dict, "budget")),
        publish=_parse_publish(expect(section.get("publish", {}), dict, "publish")),
        candidates=parse_candidates(section.get("candidates"), outputs),
        sources=sources,
        search_dirs=search_dirs or (base_dir,),
        padding=padding,
        padded_outputs=_parse_padded_outputs(section.get("padded_outputs", {}), inputs, outputs),
        samples=_parse_samples(section.get("samples"), base_dir),
        block_on_ignored_inputs=expect(section.get("block_on_ignored_inputs", False), bool, "block_on_ignored_inputs"),
        module_parity=expect(section.get("module_parity", True), bool, "module_parity"),
        rollout=rollout,
    )
