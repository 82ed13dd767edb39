"""Don't-care output positions: an output declared in ``padded_outputs`` counts only where its
mask or lengths input marks positions valid. A sequence model's output at padded positions means
nothing by design (PyTorch's fast paths write zeros there, an export computes values), so parity
compares the valid positions only and says how many values it left out; the contract still checks
the whole output's shape and dtype."""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

if TYPE_CHECKING:
    import numpy as np

    from harness.core.config import GateConfig, PaddedOutput


def row_validity(config: GateConfig, declared: PaddedOutput, feeds: Mapping[str, np.ndarray], length: int) -> np.ndarray | str:
    """(rows, positions) bool array of valid positions from the marking input, or why not."""
    import numpy as np

    spec = next(s for s in config.inputs if s.name == declared.by)
    values = np.asarray(feeds[declared.by])
    if spec.lengths is not None:
        lengths = values.reshape(-1)
        return np.arange(length)[None, :] < lengths[:, None]
    assert spec.mask is not None
    symbolic = [d for d in spec.shape if isinstance(d, str)]
    dim_axis = list(spec.shape).index(spec.mask.dim)
    batch = next((d for d in symbolic if d != spec.mask.dim), None)
    batch_axis = list(spec.shape).index(batch) if batch is not None else None
    # Reduce the mask to (rows, positions): other axes of a broadcast mask carry the same values.
    index = [slice(None) if axis in (dim_axis, batch_axis) else 0 for axis in range(values.ndim)]
    grid = values[tuple(index)]
    if batch_axis is None:
        grid = grid[None, :]
    elif batch_axis > dim_axis:
        grid = grid.T
    valid = grid.astype(bool) if spec.mask.marks == "valid" else ~grid.astype(bool)
    if valid.shape[1] != length:
        return (
            f"padded_outputs.{declared.output}: axis {declared.axis} has {length} positions, "
            f"mask {declared.by!r} has {valid.shape[1]}"
        )
    return valid


def output_validity(
    config: GateConfig, output: str, feeds: Mapping[str, np.ndarray], shape: tuple[int, ...]
) -> np.ndarray | str | None:
    """A bool array of ``shape``, True where ``output`` counts; None when every value counts."""
    import numpy as np

    declared = config.padded_outputs.get(output)
    if declared is None:
        return None
    if max(declared.axis, declared.batch_axis) >= len(shape):
        return f"padded_outputs.{output}: axis {max(declared.axis, declared.batch_axis)} does not exist in shape {shape}"
    valid = row_validity(config, declared, feeds, shape[declared.axis])
    if isinstance(valid, str):
        return valid
    if valid.shape[0] != shape[declared.batch_axis]:
        return (
            f"padded_outputs.{output}: batch axis {declared.batch_axis} has {shape[declared.batch_axis]} rows, "
            f"{declared.by!r} has {valid.shape[0]}"
        )
    index = [slice(None) if axis in (declared.batch_axis, declared.axis) else None for axis in range(len(shape))]
    grid = valid if declared.batch_axis < declared.axis else valid.T
    return np.broadcast_to(grid[tuple(index)], shape)
