"""Building candidate artifacts from the plain export. A build that fails is a result, not a
crash: the candidate is listed with the reason and can never pass or be published."""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

from harness.candidates.mixed import build_int8_mixed
from harness.core.candidate_settings import KINDS
from harness.core.errors import first_line
from harness.core.inputs import InputCase
from harness.core.samples import load_samples
from harness.runtime.runners import NO_SPINNING, ORT_LOG_SEVERITY

if TYPE_CHECKING:
    import numpy as np

    from harness.core.config import GateConfig

# Float initializers smaller than this stay fp32 in the bf16 candidate: scales, biases and norms
# are cheap to keep exact and are where rounding would hurt most.
BF16_MIN_ELEMENTS = 1024
# Runtime options every candidate runs with, recorded with a published candidate.
RUNTIME_GRAPH_OPTIMIZATION = "ORT_ENABLE_ALL"


@dataclass(frozen=True)
class Candidate:
    name: str
    kind: str
    precision: str  # "fp32", "fp16", "bf16", "int8"
    path: Path | None
    error: str | None = None
    build_seconds: float = 0.0
    notes: Mapping[str, Any] = field(default_factory=dict)

    @property
    def built(self) -> bool:
        return self.path is not None and self.error is None

    @property
    def description(self) -> str:
        return KINDS[self.kind][1]

    def session_options(self, threads: int) -> dict[str, Any]:
        """The ONNX Runtime session options the gate ran (and measured) this candidate with."""
        return {
            "providers": ["CPUExecutionProvider"], "graph_optimization_level": RUNTIME_GRAPH_OPTIMIZATION,
            "intra_op_num_threads": threads, "inter_op_num_threads": 1, "execution_mode": "ORT_SEQUENTIAL",
            "session_config_entries": dict(NO_SPINNING),
        }  # fmt: skip


def _offline_optimised(level: str) -> Callable[[Path, Path, GateConfig, Mapping[str, Any]], None]:
    def build(source: Path, target: Path, _config: GateConfig, _options: Mapping[str, Any]) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
        options.optimized_model_filepath = str(target)
        options.log_severity_level = ORT_LOG_SEVERITY
        ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])

    return build


def _transformer_fusions(source: Path, target: Path, _config: GateConfig, options: Mapping[str, Any]) -> None:
    from onnxruntime.transformers.optimizer import optimize_model

    # opt_level 0: the Python fusions only, no ONNX Runtime pass that would tie the file to this
    # machine; num_heads/hidden_size 0: detected from the graph.
    model = optimize_model(
        str(source), model_type=str(options["model_type"]), num_heads=int(options.get("num_heads", 0)),
        hidden_size=int(options.get("hidden_size", 0)), opt_level=0, use_gpu=False,
    )  # fmt: skip
    model.save_model_to_file(str(target))


def _fp16(source: Path, target: Path, _config: GateConfig, _options: Mapping[str, Any]) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    # keep_io_types: callers keep feeding and reading the original types; the casts are inside.
    model = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
    onnx.save(model, str(target))


def bf16_bits(values: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), rounded to nearest even."""
    import numpy as np

    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounding = ((bits >> 16) & 1) + np.uint32(0x7FFF)
    return ((bits + rounding) >> 16).astype(np.uint16)


def _bf16(source: Path, target: Path, _config: GateConfig, _options: Mapping[str, Any]) -> None:
    """Weights stored in bf16, cast back to fp32 where they are used. ONNX Runtime's CPU EP has
    no general bf16 kernels, so this is the bf16 ONNX Runtime runs on the CPU: bf16 weights
    (half the bytes on disk) computed in fp32 after session-time constant folding."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(source))
    graph = model.graph
    kept, casts = [], []
    for tensor in graph.initializer:
        array = numpy_helper.to_array(tensor) if tensor.data_type == TensorProto.FLOAT else None
        if array is None or array.size < BF16_MIN_ELEMENTS:
            kept.append(tensor)
            continue
        stored = helper.make_tensor(f"{tensor.name}__bf16", TensorProto.BFLOAT16, array.shape,
                                    bf16_bits(array).tobytes(), raw=True)
        kept.append(stored)
        casts.append(helper.make_node("Cast", [stored.name], [tensor.name], to=TensorProto.FLOAT,
                                      name=f"{tensor.name}__to_fp32"))
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)
    onnx.save(model, str(target))


def _int8_dynamic(source: Path, target: Path, _config: GateConfig, _options: Mapping[str, Any]) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # MatMul/Gemm only: dynamic Conv quantisation becomes ConvInteger, which the CPU EP runs for
    # uint8 weights only, and depthwise convolutions are where dynamic int8 loses accuracy worst.
    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])


def calibration_feeds(config: GateConfig, samples: int) -> list[dict[str, np.ndarray]]:
    """Calibration inputs: the user's own samples where the config names some (real inputs set
    the activation ranges best), else the gate's in-range input families at the trace sizes, one
    seed each. Stress families (1e4 spikes) would stretch every range."""
    real = load_samples(config)
    if real:
        return [dict(real[i % len(real)]) for i in range(min(samples, len(real)))]
    families = ("normal", "uniform")
    return [
        InputCase(family=families[i % len(families)], sizes=config.trace_sizes, seed=10_000 + i).materialize(config)
        for i in range(samples)
    ]


@contextmanager
def _preprocessed(source: Path, target: Path) -> Iterator[Path]:
    """``source`` through the quantiser's own pre-processing, in a file beside ``target`` while it is used."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = target.with_name(target.stem + ".pre.onnx")
    quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
    try:
        yield prepared
    finally:
        prepared.unlink(missing_ok=True)


def _int8_static(source: Path, target: Path, config: GateConfig, options: Mapping[str, Any]) -> None:
    with _preprocessed(source, target) as prepared:
        _quantise_static(prepared, target, calibration_feeds(config, int(options.get("calibration_samples", 16))))


def _quantise_static(
    prepared: Path, target: Path, feeds: Sequence[Mapping[str, np.ndarray]], exclude: Sequence[str] = ()
) -> None:
    """QDQ, per-channel int8 weights, uint8 activations calibrated on ``feeds``; the nodes named in
    ``exclude`` stay fp32."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Feeds(CalibrationDataReader):
        def __init__(self) -> None:
            self.pending = iter(feeds)

        def get_next(self) -> dict[str, Any] | None:
            feed = next(self.pending, None)
            return dict(feed) if feed is not None else None

    quantize_static(
        str(prepared), str(target), Feeds(), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=list(exclude),
    )  # fmt: skip


def _int8_mixed(source: Path, target: Path, config: GateConfig, options: Mapping[str, Any]) -> dict[str, Any]:
    feeds = calibration_feeds(config, int(options.get("calibration_samples", 16)))
    with _preprocessed(source, target) as prepared:
        return build_int8_mixed(
            prepared, target, config, feeds, lambda src, dst, exclude: _quantise_static(src, dst, feeds, exclude)
        )


# A builder writes the candidate; one that searches returns what it found (the candidate's notes).
BUILDERS: dict[str, Callable[[Path, Path, GateConfig, Mapping[str, Any]], Mapping[str, Any] | None]] = {
    "ort-basic": _offline_optimised("ORT_ENABLE_BASIC"),
    "ort-extended": _offline_optimised("ORT_ENABLE_EXTENDED"),
    "ort-transformer": _transformer_fusions,
    "fp16": _fp16,
    "bf16": _bf16,
    "int8-dynamic": _int8_dynamic,
    "int8-static": _int8_static,
    "int8-mixed": _int8_mixed,
}


def build_candidate(kind: str, source: Path, folder: Path, config: GateConfig, options: Mapping[str, Any]) -> Candidate:
    """Build one candidate next to the plain export; then check ONNX Runtime loads it."""
    precision = KINDS[kind][0]
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"candidate-{kind}.onnx"
    started = time.perf_counter()
    quiet = logging.getLogger()
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # the quantiser logs advice on the root logger
    try:
        notes = BUILDERS[kind](source, target, config, options) or {}
        import onnxruntime as ort

        session_options = ort.SessionOptions()
        session_options.log_severity_level = ORT_LOG_SEVERITY
        ort.InferenceSession(str(target), session_options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        first = first_line(exc)
        reason = f"{type(exc).__name__}: {first}"[:300].replace(str(folder), "<work>")
        return Candidate(kind, kind, precision, None, f"could not build or load: {reason}", time.perf_counter() - started)
    finally:
        quiet.setLevel(level)
    return Candidate(kind, kind, precision, target, None, time.perf_counter() - started, dict(notes))


def build_candidates(kinds: Sequence[str], source: Path, folder: Path, config: GateConfig) -> list[Candidate]:
    folder.mkdir(parents=True, exist_ok=True)
    options = {"calibration_samples": config.candidates.calibration_samples, **(config.candidates.transformer or {})}
    return [build_candidate(kind, source, folder, config, options) for kind in kinds]
