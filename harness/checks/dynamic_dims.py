"""The dynamic-dimensions check: every symbolic dimension works, within the parity tolerance, at
sizes the export never saw (conformance/test_dynamic_dims.py runs the parity check there)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.checks.declared import declare_check, with_dims

if TYPE_CHECKING:
    from harness.core.config import GateConfig

CHECK = declare_check("dynamic_dims", required=with_dims, order=60)
SIZES_PER_DIMENSION = 3


def dynamic_sizes(config: GateConfig) -> list[tuple[str, int]]:
    """(dimension, size) pairs to run: a few sizes besides the trace size per symbolic dimension."""
    return [(name, size) for name, dim in config.dims.items() for size in dim.sizes_besides_trace(SIZES_PER_DIMENSION)]
