"""Produce the ONNX artifact under test (or load a given one) and describe it."""

from __future__ import annotations

import contextlib
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from harness.core.config import GateConfig
from harness.core.errors import ArtifactError, first_line
from harness.core.inputs import InputCase
from harness.runtime.artifact_files import PROTOBUF_LIMIT, inline_external_data, manifest
from harness.runtime.artifact_files import file_sha256 as file_sha256  # its home before artifact_files
from harness.runtime.provenance import count_absolute_paths, make_reproducible
from harness.runtime.runners import ORT_LOG_SEVERITY, named_outputs, output_list

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn


@dataclass(frozen=True)
class ArtifactInfo:
    """What a release needs to know about the artifact: where, which bytes, made by what.

    ``sha256`` is the artifact's identity (harness/runtime/artifact_files.py): the file's own sha256 when
    it is self-contained, else that of the manifest over the graph and its external data files.
    ``size_bytes`` counts every file; ``files`` lists them."""

    path: Path
    sha256: str
    size_bytes: int
    origin: str  # "dynamo", "torchscript" or "given"
    producer: str
    opset: int
    versions: dict[str, str]
    export_seconds: float
    absolute_paths: int = 0  # in doc strings and metadata: the build machine's layout, leaked
    files: tuple[dict[str, Any], ...] = ()  # name, size, sha256, role ("graph" or "data")
    inlined_data_files: int = 0  # a given model's external data files, now inside the one file

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "path": str(self.path), "files": [dict(f) for f in self.files]}


def self_contained_copy(path: Path, work_dir: Path) -> tuple[Path, int]:
    """A given model with external data below protobuf's 2 GB limit ships as one file: written
    into ``work_dir`` with its data inlined, so the file checked is the file shipped. Returns the
    path to check and how many data files were inlined (0: ``path`` itself, unchanged)."""
    if not path.is_file():
        return path, 0
    try:
        files = manifest(path)
    except ArtifactError:
        raise
    except Exception:  # not a readable model at all: inspect_onnx says so in one line
        return path, 0
    if files.self_contained or files.size >= PROTOBUF_LIMIT:
        return path, 0
    work_dir.mkdir(parents=True, exist_ok=True)
    target = work_dir / "model.onnx"
    try:
        inline_external_data(path, target)
    except Exception as exc:
        first = first_line(exc, type(exc).__name__)
        raise ArtifactError(f"cannot inline the external data of {str(path)!r}: {first}") from None
    return target, len(files.data)


def library_versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch

    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def example_feeds(config: GateConfig, sizes: dict[str, int], seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic inputs inside each declared range, at the given symbolic sizes, with masks
    and lengths as real callers send them."""
    return InputCase("uniform", sizes, seed).materialize(config)


def _as_tensors(feeds: dict[str, np.ndarray]) -> tuple[torch.Tensor, ...]:
    import torch

    return tuple(torch.from_numpy(array) for array in feeds.values())



def _dynamic_output_axes(model: nn.Module, config: GateConfig) -> dict[str, dict[int, str]]:
    """Which output axes follow which symbolic input dimension, found by running the model.

    The TorchScript exporter needs output axes named explicitly; running once at the trace sizes
    and once with each dimension grown by one shows which output axes move with it.
    """
    import torch

    trace = config.trace_sizes
    with torch.no_grad():
        base = [o.shape for o in output_list(model(*_as_tensors(example_feeds(config, trace))), config.outputs)]
        axes: dict[str, dict[int, str]] = {name: {} for name in config.outputs}
        for dim in config.dims.values():
            grown = {**trace, dim.name: dim.trace + 1}
            shapes = [o.shape for o in output_list(model(*_as_tensors(example_feeds(config, grown))), config.outputs)]
            for name, before, after in zip(config.outputs, base, shapes):
                for axis, (a, b) in enumerate(zip(before, after)):
                    if a != b:
                        axes[name][axis] = dim.name
    return axes


def _outputs_in_config_order(
    model: nn.Module, config: GateConfig, args: tuple[torch.Tensor, ...]
) -> tuple[nn.Module, bool]:
    """A model that names its outputs (dict, named tuple, dataclass) is wrapped to return exactly
    the config's outputs in the config's order: both exporters flatten such outputs in their own
    order, and an ONNX output called ``a`` must carry ``a``. Other models are exported as they are."""
    import torch

    with torch.no_grad():
        named = named_outputs(model(*args))
    if named is None or not all(name in named for name in config.outputs):
        return model, False  # the contract check names what is missing

    class OutputsByName(torch.nn.Module):
        def __init__(self, inner: nn.Module, names: tuple[str, ...]) -> None:
            super().__init__()
            self.inner, self.names = inner, names

        def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return tuple(output_list(self.inner(*inputs), self.names))

    return OutputsByName(model, tuple(config.outputs)).eval(), True


def _grouped_for_varargs(model: nn.Module, shapes: tuple[Any, ...]) -> tuple[Any, ...]:
    """torch.export matches dynamic_shapes to forward()'s parameters: the inputs a ``*past``
    parameter takes (a flat KV cache, harness/models/decoder.py) go in one tuple of their own."""
    import inspect

    parameters = list(inspect.signature(model.forward).parameters.values())
    star = next((i for i, p in enumerate(parameters) if p.kind is inspect.Parameter.VAR_POSITIONAL), None)
    if star is None or star >= len(shapes):
        return shapes
    return (*shapes[:star], tuple(shapes[star:]))


def export_onnx(model: nn.Module, config: GateConfig, path: Path) -> float:
    """Export ``model`` to ``path`` as the config says; returns the seconds it took."""
    import torch

    feeds = example_feeds(config, config.trace_sizes)
    args = _as_tensors(feeds)
    try:
        model, wrapped = _outputs_in_config_order(model, config, args)
    except Exception as exc:  # the config's inputs are not what the model takes: one line, not a traceback
        shapes = ", ".join(f"{name} {list(value.shape)}" for name, value in feeds.items())
        raise ArtifactError(
            f"the model cannot run on the config's example inputs ({shapes}): {type(exc).__name__}: {first_line(exc)}"
        ) from exc
    input_names = [spec.name for spec in config.inputs]
    started = time.perf_counter()
    try:
        with torch.no_grad(), _without_fused_fast_paths():
            if config.exporter == "dynamo":
                dims = {
                    name: torch.export.Dim(name, min=spec.low if spec.low > 1 else 1)
                    for name, spec in config.dims.items()
                }
                # torch.export keys dynamic_shapes by the forward() parameter names, which need
                # not match the ONNX input names; a tuple in argument order avoids that trap.
                # A sum of dimensions (a mask over cache + tokens) has no Dim of its own: torch.export
                # adds Dims only to integers, so it is left for export to relate.
                dynamic_shapes = tuple(
                    {axis: dims.get(d, torch.export.Dim.DYNAMIC) for axis, d in enumerate(spec.shape) if isinstance(d, str)}
                    for spec in config.inputs
                )
                if wrapped:  # forward(*inputs) takes the inputs as one tuple argument
                    dynamic_shapes = (dynamic_shapes,)
                else:
                    dynamic_shapes = _grouped_for_varargs(model, dynamic_shapes)
                torch.onnx.export(
                    model, args, str(path), dynamo=True, input_names=input_names,
                    output_names=list(config.outputs), opset_version=config.opset,
                    dynamic_shapes=dynamic_shapes, external_data=False, verbose=False,
                )  # fmt: skip
            else:
                dynamic_axes: dict[str, dict[int, str]] = {
                    spec.name: {a: d for a, d in enumerate(spec.shape) if isinstance(d, str)}
                    for spec in config.inputs
                }
                dynamic_axes.update(_dynamic_output_axes(model, config))
                torch.onnx.export(
                    model, args, str(path), dynamo=False, input_names=input_names,
                    output_names=list(config.outputs), opset_version=config.opset,
                    dynamic_axes=dynamic_axes, do_constant_folding=True,
                )  # fmt: skip
    except Exception as exc:
        reason = export_failure_reason(exc)
        hint = ' (if torch.export cannot trace the model, try exporter = "torchscript")' if config.exporter == "dynamo" else ""
        raise ArtifactError(f"the {config.exporter} exporter failed: {reason}{hint}") from exc
    make_reproducible(path, config.search_dirs)  # no build-machine paths: same bytes in any folder
    problem = baked_dimension(path, config)
    if problem:
        other = "dynamo" if config.exporter == "torchscript" else "torchscript"
        raise ArtifactError(f"the {config.exporter} exporter cannot export this model: {problem}; try exporter = {other!r}")
    return time.perf_counter() - started


def baked_dimension(path: Path, config: GateConfig) -> str | None:
    """Why the exported graph does not run with a symbolic dimension one step from its trace size,
    or None. An exporter can fix a dimension it was told is dynamic (the TorchScript exporter does
    so inside nn.MultiheadAttention); the file then fails at every other size. Saying so here names
    the exporter's limit in one line, instead of a Reshape error in every later check."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = ORT_LOG_SEVERITY
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    wanted = [o.name for o in session.get_outputs()]
    for dim in config.dims.values():
        size = dim.trace + 1 if dim.trace + 1 <= dim.high else dim.trace - 1
        if size < dim.low or size == dim.trace:
            continue
        feeds = example_feeds(config, {**config.trace_sizes, dim.name: size})
        try:
            session.run(wanted, {i.name: feeds[i.name] for i in session.get_inputs() if i.name in feeds})
        except Exception as exc:
            node = re.search(r"running (\w+) node\. Name:'([^']*)'", str(exc))
            where = f" ({node.group(1)} {node.group(2)!r} fails)" if node else ""
            return f"it fixed dimension {dim.name!r} at its trace size {dim.trace}: the graph cannot run at {dim.name}={size}{where}"
    return None


@contextlib.contextmanager
def _without_fused_fast_paths() -> Iterator[None]:
    """PyTorch's fused inference kernels for nn.MultiheadAttention and nn.TransformerEncoder
    (``_native_multi_head_attention``, nested tensors from a padding mask) have no ONNX form; the
    TorchScript exporter traces them and fails. The export takes the composite path, which computes
    the same function; the PyTorch reference still runs as users run it, fast paths included."""
    import torch

    enabled = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(enabled)


def export_failure_reason(exc: BaseException) -> str:
    """One line saying why an export failed: the innermost cause, not the exporter's generic
    "Failed to export the model with torch.export. This is step 1/3..." wrapper text."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(exc).splitlines()]
    first = next((line for line in lines if line), "")
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def inspect_onnx(path: Path, origin: str, export_seconds: float = 0.0, *, inlined_data_files: int = 0) -> ArtifactInfo:
    """Load ``path``'s graph, run the ONNX checker on it and describe it with its external data
    files. Raises ArtifactError."""
    import onnx

    if not path.is_file():
        raise ArtifactError(f"ONNX file {str(path)!r} does not exist")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ArtifactError(
            f"{str(path)!r} is not a readable ONNX model (truncated or not ONNX?): "
            f"{type(exc).__name__}: {exc}"
        ) from None
    if not proto.graph.node and not proto.graph.output:
        raise ArtifactError(f"{str(path)!r} is not an ONNX model: it holds no graph")
    files = manifest(path, proto)  # first: a missing data file gets a clearer line than the checker's
    try:
        # The path form also checks models with external data and those above 2 GB.
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:
        message = first_line(exc, type(exc).__name__)
        raise ArtifactError(f"{str(path)!r} fails the ONNX checker: {message}") from None
    default_opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    return ArtifactInfo(
        path=path,
        sha256=files.identity,
        size_bytes=files.size,
        origin=origin,
        producer=f"{proto.producer_name} {proto.producer_version}".strip(),
        opset=default_opset,
        versions=library_versions(),
        export_seconds=round(export_seconds, 3),
        absolute_paths=count_absolute_paths(proto),
        files=tuple(files.to_dict()),
        inlined_data_files=inlined_data_files,
    )
