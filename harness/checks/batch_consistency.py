"""Batch consistency: a batch gives the outputs of its parts. Graphs that couple samples (batch
statistics, a reshape that folds the batch axis) fail here."""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.checks.declared import declare_check, with_dims
from harness.compare.rule import ParityResult, compare_outputs
from harness.core.inputs import InputCase, describe_case
from harness.runtime.lanes import Lanes

if TYPE_CHECKING:
    import numpy as np

    from harness.core.config import GateConfig
    from harness.runtime.runners import OrtRunner


# A batch of 2 or more needs a symbolic batch dimension.
CHECK = declare_check("batch_consistency", required=with_dims, order=40)


def whole_and_parts(
    case: InputCase, config: GateConfig, runner: OrtRunner, *, batch_dim: str, split: int, lanes: Lanes | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray], str]:  # fmt: skip
    """``case``'s feeds, ``runner``'s outputs on the whole batch, the concatenation of its outputs
    on the first ``split`` samples and on the rest, and the split in words ("parts 1+3"). A
    recorded sample keeps its own batch size (``batch_size``), so ``split`` is brought inside it.
    With two ``lanes`` the whole batch runs beside its parts."""
    import numpy as np

    feeds = case.materialize(config)
    axes = {spec.name: spec.shape.index(batch_dim) for spec in config.inputs if batch_dim in spec.shape}
    size = batch_size(feeds, axes, case.sizes[batch_dim])
    if size < 2:
        raise ValueError(f"{describe_case(case)} holds a batch of {size}: nothing to split")
    split = min(max(split, 1), size - 1)
    with (lanes or Lanes.sequential()).beside(runner.infer, feeds) as whole_run:
        parts = [
            runner.infer({n: np.take(a, range(lo, hi), axis=axes[n]) if n in axes else a for n, a in feeds.items()})
            for lo, hi in ((0, split), (split, size))
        ]
        whole = whole_run.result()
    joined = {name: np.concatenate([p[name] for p in parts], axis=output_batch_axis(whole[name], parts[0][name])) for name in whole}
    return feeds, whole, joined, f"batch {size}, parts {split}+{size - split}"


def output_batch_axis(whole: np.ndarray, first_part: np.ndarray) -> int:
    """The axis an output holds the batch on: the first whose size follows the split (a recurrent
    state is [layers, batch, hidden]); 0 where none does, and concatenating reports the mismatch."""
    moved = [axis for axis, (a, b) in enumerate(zip(whole.shape, first_part.shape)) if a != b]
    return moved[0] if moved and whole.ndim == first_part.ndim else 0


def batch_size(feeds: dict[str, np.ndarray], axes: dict[str, int], default: int) -> int:
    """The batch the feeds hold along their batch axes (a sample as recorded may differ from the case's size)."""
    return next((int(feeds[name].shape[axis]) for name, axis in axes.items() if name in feeds), default)


def check_batch_consistency(
    case: InputCase, config: GateConfig, runner: OrtRunner, *, batch_dim: str, split: int, lanes: Lanes | None = None,
) -> ParityResult:  # fmt: skip
    """``runner`` on ``case`` against the concatenation of ``runner`` on its first ``split``
    samples and on the rest, judged by the parity tolerances (without the fp64 reference)."""
    _, whole, joined, parts = whole_and_parts(case, config, runner, batch_dim=batch_dim, split=split, lanes=lanes)
    batch, _, split_words = parts.partition(", ")
    return compare_outputs(
        whole, joined, config, candidate=f"{runner.name} {batch}", reference=split_words, context=describe_case(case),
    )  # fmt: skip
