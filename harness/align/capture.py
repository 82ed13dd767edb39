"""Every named module's inputs and output in PyTorch, in fp32 and in fp64, from forward hooks."""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from harness.core.errors import first_line
from harness.runtime.case_runs import CaseRuns
from harness.runtime.runners import TorchRunner, output_list

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

    from harness.core.inputs import InputCase


@dataclass
class ModuleCall:
    """One named module as PyTorch ran it; ``order`` counts forward completions, so a child comes
    before the parent that called it."""

    name: str
    cls: str
    source: str
    order: int = -1
    calls: int = 0
    inputs32: list[np.ndarray] = field(default_factory=list)
    inputs64: list[np.ndarray] = field(default_factory=list)
    outputs32: list[np.ndarray] = field(default_factory=list)
    outputs64: list[np.ndarray] = field(default_factory=list)

    @property
    def depth(self) -> int:
        return self.name.count(".") + 1 if self.name else 0


@dataclass
class Capture:
    modules: dict[str, ModuleCall]  # by module path, in completion order
    outputs32: list[np.ndarray]
    outputs64: list[np.ndarray] | None
    fp64_unavailable: str | None = None

    def in_order(self) -> list[ModuleCall]:
        return sorted((m for m in self.modules.values() if m.calls), key=lambda m: m.order)


def relative_source(filename: str, line: int, root: Path) -> str:
    """``file:line`` relative to the project, else to the import root that holds it, never absolute."""
    return f"{_relative_file(filename, root, tuple(sys.path))}:{line}"


@functools.lru_cache(maxsize=4096)
def _relative_file(filename: str, root: Path, import_roots: tuple[str, ...]) -> str:
    # Cached: a capture asks for every module's call site on every case, and resolving paths
    # against sys.path was ~40% of a hooked run's own cost (1.7 s of a default gate). sys.path is
    # part of the key: a gate puts the config's search_dirs on it, which changes the answer.
    path = Path(filename)
    try:
        path = path.resolve()
    except OSError:
        return path.name
    bases = [root.resolve(), *(Path(p).resolve() for p in import_roots if p and Path(p).is_dir())]
    # The deepest base wins: a library in a venv inside the project reads as
    # `transformers/models/bert/modeling_bert.py`, not `.venv/lib/python3.11/site-packages/...`.
    holding = [base for base in bases if base in path.parents]
    if holding:
        return path.relative_to(max(holding, key=lambda b: len(b.parts))).as_posix()
    return path.name


@functools.lru_cache(maxsize=4096)
def _skipped_frame_file(filename: str) -> bool:
    """Whether frames of ``filename`` are torch's or this file's: not the line that called a module."""
    import torch

    resolved = str(Path(filename).resolve())
    return resolved.startswith(str(Path(torch.__file__).resolve().parent)) or resolved == str(Path(__file__).resolve())


def _call_site(root: Path) -> str:
    # The first frame outside torch and this file is the line of user code that called the module
    # (for a Sequential's child: the line that called the Sequential). Frames are walked, not
    # extracted: traceback.extract_stack reads every frame's source line.
    frame = sys._getframe(2)
    while frame is not None:
        if not _skipped_frame_file(frame.f_code.co_filename):
            return relative_source(frame.f_code.co_filename, frame.f_lineno or 0, root)
        frame = frame.f_back
    return "?"


def _tensors(values: Any) -> list[Any]:
    import torch

    if isinstance(values, torch.Tensor):
        # A nested tensor (PyTorch's fast attention path inside nn.TransformerEncoder) has no dense
        # layout to compare: such a module counts as returning no tensor and is listed as not aligned.
        return [] if values.is_nested else [values]
    if isinstance(values, Mapping):
        values = list(values.values())
    if isinstance(values, (tuple, list)):
        return [t for v in values for t in _tensors(v)]
    return []


def _numpy(tensors: Sequence[Any]) -> list[np.ndarray]:
    return [t.detach().cpu().numpy().copy() for t in tensors]


def _run_hooked(
    model: nn.Module, tensors: Sequence[Any], modules: dict[str, ModuleCall], precision: str, root: Path,
    output_names: Sequence[str], record: list[Any] | None = None,
) -> list[np.ndarray]:  # fmt: skip
    import torch

    from harness.runtime.fp64_mode import KeepFloat64  # defers torch

    handles = []
    counter = [0]
    for name, module in model.named_modules():
        if precision == "32":
            modules[name] = ModuleCall(name, type(module).__name__, "")
        elif name not in modules:  # a part of a float64 stand-in: not one of the model's modules
            continue

        def before(_: Any, args: Any, name: str = name) -> None:
            record = modules[name]
            setattr(record, f"inputs{precision}", _numpy(_tensors(args)))
            if precision == "32":
                record.calls += 1
                record.source = record.source or _call_site(root)

        def after(_: Any, __: Any, output: Any, name: str = name) -> None:
            record = modules[name]
            setattr(record, f"outputs{precision}", _numpy(_tensors(output)))
            if precision == "32":
                record.order = counter[0]
                counter[0] += 1

        handles += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]
    import contextlib

    # As TorchRunner.forward; ``record`` collects the float inputs of argmax/argmin/topk calls.
    if precision == "64":
        widen: Any = KeepFloat64(record=record)
    else:
        widen = KeepFloat64(widen=False, record=record) if record is not None else contextlib.nullcontext()
    try:
        with torch.inference_mode(), widen:
            # Named outputs by name, in the config's order, as the runners and the export take them.
            return _numpy(_tensors(output_list(model(*tensors), output_names)))
    finally:
        for handle in handles:
            handle.remove()


def capture_modules(
    model: nn.Module, feeds: Mapping[str, np.ndarray], input_names: Sequence[str],
    output_names: Sequence[str], *, root: Path,
) -> CaseRuns:  # fmt: skip
    """Run ``model`` once in fp32 and once as a float64 copy, recording every named module."""
    runner32 = TorchRunner(model, input_names, output_names)
    try:
        runner64: TorchRunner | None = TorchRunner(model, input_names, output_names, dtype="float64")
        unavailable = None
    except Exception as exc:  # a model without float64 kernels: errors are shown without a floor
        runner64, unavailable = None, exc
    return capture_runs(runner32, runner64, feeds, root=root, fp64_error=unavailable)


def capture_runs(
    runner32: TorchRunner, runner64: TorchRunner | None, feeds: Mapping[str, np.ndarray], *, root: Path,
    case: InputCase | None = None, fp64_error: Exception | None = None, discrete: bool = False,
) -> CaseRuns:  # fmt: skip
    """One case's runs as the value module parity and `onnx-gate debug` judge: PyTorch fp32 and
    float64 with every named module's inputs and outputs (``CaseRuns.modules``, a Capture).
    ``discrete``: also the float inputs of the model's argmax/argmin/topk calls, as graph
    fidelity reads them (``run_case_in_float64``)."""
    discrete32: list[Any] | None = [] if discrete else None
    discrete64: list[Any] | None = [] if discrete else None
    capture = capture_with(
        runner32, runner64, feeds, root=root, fp64_error=fp64_error, records=(discrete32, discrete64)
    )  # fmt: skip
    names = runner32.output_names
    exact = dict(zip(names, capture.outputs64)) if capture.outputs64 is not None else None
    return CaseRuns(
        case, feeds, dict(zip(names, capture.outputs32)), None, exact, runner32.name, "modules", modules=capture,
        discrete32=tuple(discrete32 or ()), discrete64=tuple(discrete64 or ()),
    )  # fmt: skip


def capture_with(
    runner32: TorchRunner, runner64: TorchRunner | None, feeds: Mapping[str, np.ndarray], *, root: Path,
    fp64_error: Exception | None = None, records: tuple[list[Any] | None, list[Any] | None] = (None, None),
) -> Capture:  # fmt: skip
    """``capture_modules`` with runners that already exist (the gate's own fp32 model and float64
    copy: no copy per input); ``runner64`` None when the model has no float64 run. ``records``:
    lists for the fp32 and float64 runs' argmax/argmin/topk inputs, or None."""
    output_names = runner32.output_names
    modules: dict[str, ModuleCall] = {}
    outputs32 = _run_hooked(runner32.model, runner32.to_tensors(feeds), modules, "32", root, output_names, records[0])
    try:
        if runner64 is None:
            raise fp64_error or RuntimeError("no float64 run")
        outputs64 = _run_hooked(
            runner64.model, runner64.to_tensors(feeds), modules, "64", root, output_names, records[1]
        )  # fmt: skip
    except Exception as exc:  # a model without float64 kernels: errors are shown without a floor
        first = first_line(exc)
        return Capture(modules, outputs32, None, f"{type(exc).__name__}: {first}")
    return Capture(modules, outputs32, outputs64)
