"""Hypothesis strategies for the gate's inputs.

Hypothesis draws a small description of each input (a family, symbolic sizes, a seed and a few
parameters) and numpy materialises the tensor from it (harness/core/inputs.py). Drawing whole tensors
element by element would be slow and exceed Hypothesis's buffer for real models; a description also
shrinks to a readable falsifying example such as ``InputCase(family='zeros', sizes={'batch': 1}, ...)``.
"""

from __future__ import annotations

from typing import Mapping

from hypothesis import strategies as st

from harness.core.config import GateConfig, representable_range
from harness.core.inputs import (
    ALL_FAMILIES,
    FAMILIES,
    PERTURBATIONS,
    SAMPLES,
    STRESS_MAGNITUDES,
    VALID_LAYOUTS,
    InputCase,
    describe_case,
    families_for,
)
from harness.core.samples import load_samples

__all__ = ["ALL_FAMILIES", "FAMILIES", "InputCase", "describe_case", "families_for", "input_cases", "symbolic_sizes"]


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


def _sample_count(config: GateConfig) -> int:
    return len(load_samples(config))


def input_cases(
    config: GateConfig,
    *,
    pinned: Mapping[str, int] | None = None,
    families: tuple[str, ...] | None = None,
) -> st.SearchStrategy[InputCase]:
    """Input cases over the config's inputs.

    * pinned: symbolic sizes held fixed (e.g. ``{"batch": 1}``). Default: all drawn.
    * families: the input families to draw from. Default: ``families_for(config)``.
    """
    families = families_for(config) if families is None else families
    unknown = set(families) - set(ALL_FAMILIES)
    if unknown:
        raise ValueError(f"unknown input families {sorted(unknown)}; valid: {', '.join(ALL_FAMILIES)}")
    if SAMPLES in families and not config.samples:
        raise ValueError("the samples family needs samples = [...] in the config")
    largest = max((max(abs(s.low), abs(s.high)) for s in config.inputs), default=1.0)
    # Hypothesis takes only bounds a float32 holds exactly.
    low, high = representable_range(-largest, largest, "float32")
    sides = ("right", "left") if any(p.side == "both" for p in config.padding.values()) else ("right",)
    samples = _sample_count(config) if SAMPLES in families else 1
    return st.builds(
        InputCase,
        family=st.sampled_from(families),
        sizes=symbolic_sizes(config, pinned=pinned),
        seed=st.integers(0, 2**32 - 1),
        magnitude=st.sampled_from(STRESS_MAGNITUDES),
        constant=st.floats(low, high, allow_nan=False, width=32),
        spike_fraction=st.sampled_from([0.001, 0.01, 0.05]),
        valid=st.sampled_from(VALID_LAYOUTS) if config.padding else st.just("random"),
        side=st.sampled_from(sides),
        dither=st.sampled_from([1e-3, 1e-4, 1e-5]),
        sample=st.integers(0, samples - 1),
        perturb=st.sampled_from(PERTURBATIONS),
    )
