"""Per module: ONNX Runtime's error against PyTorch fp32, PyTorch fp32's own error against fp64
(the module's noise floor), their ratio, and which module the mismatch starts in."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping

from harness.compare.rule import compare_noise, exceeds_without_floor

if TYPE_CHECKING:
    import numpy as np

    from harness.align.capture import Capture, ModuleCall
    from harness.align.scopes import Alignment


@dataclass(frozen=True)
class ModuleRow:
    module: str
    cls: str
    source: str
    ops: str
    order: int
    depth: int
    max_abs: float  # |ONNX - PyTorch fp32|
    mean_abs: float
    floor: float | None  # max |PyTorch fp32 - fp64|; None without an fp64 run
    ratio: float | None  # max |ONNX - fp64| / floor
    exceeds: bool
    inputs_ok: bool | None  # None: some input could not be checked
    input_ratio: float | None
    # ONNX input value -> index of the PyTorch input it carries, for the isolation run.
    input_map: Mapping[str, int] = field(default_factory=dict)
    # Values ONNX Runtime makes NaN/Inf where PyTorch fp32 is finite: a divergence of its own.
    nonfinite: int = 0
    # The ratio as the bound judges it (the floor at least its slack of a few ulps); None without fp64.
    judged_ratio: float | None = None


@dataclass
class ModuleVerdict:
    rows: list[ModuleRow]
    factor: float
    culprit: ModuleRow | None = None
    suspect: ModuleRow | None = None  # first to exceed, but its inputs could not be checked
    outputs: dict[str, ModuleRow] = field(default_factory=dict)  # the graph outputs, as rows
    shape_mismatch: dict[str, str] = field(default_factory=dict)


def _row(
    name: str, cls: str, source: str, ops: str, order: int, depth: int,
    onnx: np.ndarray, ref32: np.ndarray, ref64: np.ndarray | None, factor: float,
) -> ModuleRow:  # fmt: skip
    import numpy as np

    diff = np.abs(onnx.astype(np.float64) - ref32.astype(np.float64))
    diff = diff[np.isfinite(diff)]
    max_abs = float(diff.max()) if diff.size else 0.0
    mean_abs = float(diff.mean()) if diff.size else 0.0
    if ref64 is None:
        # No floor: fall back to the parity rule's fixed relative bound (a few hundred ulps). NaN/Inf that
        # only ONNX Runtime produces is beyond any bound.
        scale = float(np.abs(ref32[np.isfinite(ref32)]).max(initial=0.0))
        onnx_only = int(np.count_nonzero(~np.isfinite(onnx) & np.isfinite(ref32)))
        return ModuleRow(name, cls, source, ops, order, depth, max_abs, mean_abs, None,
                         float("inf") if onnx_only else None,
                         bool(onnx_only) or exceeds_without_floor(max_abs, scale), None, None,
                         nonfinite=onnx_only)  # fmt: skip
    noise = compare_noise(name, onnx, ref32, ref64, factor)
    return ModuleRow(name, cls, source, ops, order, depth, max_abs, mean_abs, noise.floor_max, noise.ratio,
                     not noise.passed, None, None, nonfinite=noise.nonfinite,
                     judged_ratio=noise.judged_ratio)  # fmt: skip


def _check_inputs(
    row: ModuleRow, call: ModuleCall, inputs: tuple[str, ...], values: Mapping[str, np.ndarray],
    feeds: Mapping[str, np.ndarray], producers: Mapping[str, ModuleRow], factor: float,
) -> ModuleRow:  # fmt: skip
    """Compare the module's ONNX inputs with the tensors PyTorch passed it, matched by shape."""
    from dataclasses import replace

    used: set[int] = set()
    mapping: dict[str, int] = {}
    verdicts: list[bool | None] = []
    worst: float | None = None
    for name in inputs:
        if name in feeds:
            verdicts.append(True)  # a graph input is the same array on both sides
            continue
        array = values.get(name)
        index = next(
            (
                i
                for i, t in enumerate(call.inputs32)
                if i not in used and array is not None and t.shape == array.shape
            ),
            None,
        )
        if index is not None and array is not None and call.inputs64:
            used.add(index)
            mapping[name] = index
            noise = compare_noise(name, array, call.inputs32[index], call.inputs64[index], factor)
            verdicts.append(bool(noise.passed))
            worst = max(worst or 0.0, noise.ratio)
        elif name in producers:
            verdicts.append(not producers[name].exceeds)
        else:
            verdicts.append(None)
    ok: bool | None = False if False in verdicts else (None if None in verdicts else True)
    return replace(row, inputs_ok=ok, input_ratio=worst, input_map=mapping)


def fold_candidates(call: ModuleCall, capture: Capture, alignment: Alignment, shape: tuple[int, ...]) -> list[ModuleCall]:
    """Modules the exporter may have folded into ``call``: the TorchScript exporter folds an
    eval-mode BatchNorm into the convolution before it, so the BatchNorm leaves no node and the
    convolution's ONNX output is the BatchNorm's. Such a module left no node, ran once right
    after ``call`` on exactly ``call``'s output, and its output has the ONNX value's ``shape``."""
    import numpy as np

    output = call.outputs32[0]
    return [
        successor for successor in capture.in_order()
        if successor.order > call.order and successor.calls == 1 and successor.name not in alignment.aligned
        and len(successor.inputs32) == 1 and len(successor.outputs32) == 1 and successor.outputs64
        and successor.inputs32[0].shape == output.shape and np.array_equal(successor.inputs32[0], output)
        and successor.outputs32[0].shape == shape
    ]  # fmt: skip


def _folded(
    row: ModuleRow, call: ModuleCall, capture: Capture, alignment: Alignment, onnx: np.ndarray, factor: float
) -> ModuleRow:  # fmt: skip
    """The row of ``call`` together with a module folded into it (``fold_candidates``) whose own
    output the ONNX value matches within noise; otherwise ``row`` stands."""
    for successor in fold_candidates(call, capture, alignment, onnx.shape):
        fused = _row(
            row.module, f"{row.cls} + {successor.cls} `{successor.name}` (folded)", row.source, row.ops, row.order,
            row.depth, onnx, successor.outputs32[0], successor.outputs64[0], factor,
        )  # fmt: skip
        if not fused.exceeds:
            return fused
    return row


def judge(
    capture: Capture, alignment: Alignment, values: Mapping[str, np.ndarray],
    feeds: Mapping[str, np.ndarray], output_names: tuple[str, ...], factor: float,
) -> ModuleVerdict:  # fmt: skip
    """Rows for every aligned module in PyTorch's execution order, then the culprit: the first
    module whose output exceeds ``factor`` x its noise floor while its inputs are within it."""
    verdict = ModuleVerdict([], factor)
    producers: dict[str, ModuleRow] = {}
    for call in capture.in_order():
        where = alignment.aligned.get(call.name)
        if where is None:
            continue
        onnx = values[where.output]
        if onnx.shape != call.outputs32[0].shape:
            verdict.shape_mismatch[call.name] = (
                f"PyTorch shape {call.outputs32[0].shape} vs ONNX {where.output!r} {onnx.shape}"
            )
            continue
        ref64 = call.outputs64[0] if call.outputs64 else None
        row = _row(
            call.name,
            call.cls,
            call.source,
            where.ops,
            call.order,
            call.depth,
            onnx,
            call.outputs32[0],
            ref64,
            factor,
        )
        if row.exceeds:
            row = _folded(row, call, capture, alignment, onnx, factor)
        row = _check_inputs(row, call, where.inputs, values, feeds, producers, factor)
        producers[where.output] = row
        verdict.rows.append(row)
    last = max((r.order for r in verdict.rows), default=0)
    for offset, name in enumerate(output_names):
        ref64 = capture.outputs64[offset] if capture.outputs64 else None
        verdict.outputs[name] = _row(
            f"output {name}", "graph output", "", "", last + 1 + offset, 0,
            values[name], capture.outputs32[offset], ref64, factor,
        )  # fmt: skip
    for row in verdict.rows:
        if not row.exceeds:
            continue
        if row.inputs_ok:
            verdict.culprit = row
            break
        if row.inputs_ok is None and verdict.suspect is None:
            verdict.suspect = row
    return verdict


def culprit_sentence(culprit: ModuleRow, factor: float) -> str:
    """The verdict that names the module where the mismatch starts, as debug and the gate's
    module-level parity print it."""
    start = f"FAILED | the mismatch starts in `{culprit.module}` ({culprit.cls}, {culprit.source})"
    if culprit.nonfinite:
        return (
            f"{start}: ONNX Runtime gives NaN/Inf in {culprit.nonfinite} of its output values where "
            "PyTorch's are finite, while its inputs are within PyTorch's fp32 noise."
        )
    if culprit.ratio is None:
        return f"{start}; no fp64 floor."
    return (
        f"{start}: its output is {culprit.ratio:.3g}x PyTorch's own fp32 noise (allowed {factor:g}x) "
        "while its inputs are within it."
    )
