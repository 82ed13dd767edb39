"""Batch consistency: a batch gives the outputs of its parts. Graphs that couple samples (batch
statistics, a reshape that folds the batch axis) fail here."""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.checks.declared import declare_check, with_dims
from harness.compare.rule import ParityResult, compare_outputs
from harness.core.inputs import InputCase, describe_case

if TYPE_CHECKING:
    import numpy as np

    from harness.core.config import GateConfig
    from harness.runtime.runners import OrtRunner


# A batch of 2 or more needs a symbolic batch dimension.
CHECK = declare_check("batch_consistency", required=with_dims, order=40)


def whole_and_parts(
    case: InputCase, config: GateConfig, runner: OrtRunner, *, batch_dim: str, split: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``case``'s feeds, ``runner``'s outputs on the whole batch, and the concatenation of its
    outputs on the first ``split`` samples and on the rest."""
    import numpy as np

    feeds = case.materialize(config)
    size = case.sizes[batch_dim]
    axes = {spec.name: spec.shape.index(batch_dim) for spec in config.inputs if batch_dim in spec.shape}
    whole = runner.infer(feeds)
    parts = [
        runner.infer({n: np.take(a, range(lo, hi), axis=axes[n]) if n in axes else a for n, a in feeds.items()})
        for lo, hi in ((0, split), (split, size))
    ]
    joined = {name: np.concatenate([p[name] for p in parts], axis=0) for name in whole}
    return feeds, whole, joined


def check_batch_consistency(
    case: InputCase, config: GateConfig, runner: OrtRunner, *, batch_dim: str, split: int
) -> ParityResult:
    """``runner`` on ``case`` against the concatenation of ``runner`` on its first ``split``
    samples and on the rest, judged by the parity tolerances (without the fp64 reference)."""
    _, whole, joined = whole_and_parts(case, config, runner, batch_dim=batch_dim, split=split)
    size = case.sizes[batch_dim]
    return compare_outputs(
        whole, joined, config, candidate=f"{runner.name} batch {size}",
        reference=f"parts {split}+{size - split}", context=describe_case(case),
    )  # fmt: skip
