"""Hypothesis strategies for the gate's inputs.

Hypothesis draws a small description of each input (a family, symbolic sizes, a seed and a few
parameters) and numpy materialises the tensor from it. Drawing whole tensors element by element
would be slow and exceed Hypothesis's buffer for real models; a description also shrinks to a
readable falsifying example such as ``InputCase(family='zeros', sizes={'batch': 1}, ...)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping

from hypothesis import strategies as st

from harness.config import GateConfig, InputSpec

if TYPE_CHECKING:
    import numpy as np

FAMILIES = ("normal", "uniform", "large", "zeros", "constant", "spikes")


@dataclass(frozen=True)
class InputCase:
    """One reproducible set of feeds: enough to rebuild every input tensor exactly."""

    family: str
    sizes: Mapping[str, int]
    seed: int = 0
    magnitude: float = 1.0
    constant: float = 0.0
    spike_fraction: float = 0.01
    note: str = field(default="", compare=False)

    def materialize(self, inputs: tuple[InputSpec, ...]) -> dict[str, np.ndarray]:
        import numpy as np

        rng = np.random.default_rng(self.seed)
        return {spec.name: _fill(spec, spec.concrete_shape(self.sizes), self, rng) for spec in inputs}


def describe_case(case: InputCase) -> str:
    sizes = ", ".join(f"{k}={v}" for k, v in case.sizes.items())
    return f"{case.family} inputs ({sizes}, seed={case.seed})"


def _fill(spec: InputSpec, shape: tuple[int, ...], case: InputCase, rng: np.random.Generator) -> np.ndarray:
    import numpy as np

    low, high = spec.low, spec.high
    center, spread = (low + high) / 2, max((high - low) / 2, 1e-3)
    if spec.dtype == "bool":
        values = np.zeros(shape, bool) if case.family == "zeros" else rng.random(shape) < 0.5
        return values
    if spec.dtype.startswith(("int", "uint")):
        if case.family == "zeros":
            return np.full(shape, int(np.clip(0, low, high)), spec.dtype)
        if case.family == "constant":
            return np.full(shape, int(round(np.clip(case.constant, low, high))), spec.dtype)
        return rng.integers(int(low), int(high) + 1, shape).astype(spec.dtype)
    if case.family == "normal":
        values = rng.normal(center, spread / 2, shape)
    elif case.family == "uniform":
        values = rng.uniform(low, high, shape)
    elif case.family == "large":
        values = rng.normal(0.0, case.magnitude, shape)
    elif case.family == "zeros":
        values = np.zeros(shape)
    elif case.family == "constant":
        values = np.full(shape, case.constant)
    elif case.family == "spikes":
        values = np.zeros(shape)
        mask = rng.random(shape) < case.spike_fraction
        values[mask] = rng.choice([-1.0, 1.0], mask.sum()) * case.magnitude
    else:
        raise ValueError(f"unknown input family {case.family!r}; valid: {', '.join(FAMILIES)}")
    return values.astype(spec.dtype)


def symbolic_sizes(config: GateConfig, *, pinned: Mapping[str, int] | None = None) -> st.SearchStrategy[dict[str, int]]:
    """Sizes for every symbolic dimension, each within its declared range.

    * pinned: sizes to use as given instead of drawing them. Default: none.
    """
    pinned = dict(pinned or {})
    return st.fixed_dictionaries(
        {
            name: st.just(pinned[name]) if name in pinned else st.integers(dim.low, dim.high)
            for name, dim in config.dims.items()
        }
    )


def input_cases(
    config: GateConfig,
    *,
    pinned: Mapping[str, int] | None = None,
    families: tuple[str, ...] = FAMILIES,
) -> st.SearchStrategy[InputCase]:
    """Input cases over the config's inputs.

    * pinned: symbolic sizes held fixed (e.g. ``{"batch": 1}``). Default: all drawn.
    * families: the input families to draw from. Default: all of ``FAMILIES``.
    """
    unknown = set(families) - set(FAMILIES)
    if unknown:
        raise ValueError(f"unknown input families {sorted(unknown)}; valid: {', '.join(FAMILIES)}")
    largest = max((max(abs(s.low), abs(s.high)) for s in config.inputs), default=1.0)
    return st.builds(
        InputCase,
        family=st.sampled_from(families),
        sizes=symbolic_sizes(config, pinned=pinned),
        seed=st.integers(0, 2**32 - 1),
        magnitude=st.sampled_from([1e2, 1e3, 1e4]),
        constant=st.floats(-largest, largest, allow_nan=False, width=32),
        spike_fraction=st.sampled_from([0.001, 0.01, 0.05]),
    )
