"""Input cases: a small, reproducible description of one set of feeds, and the numpy that
materialises it.

A case names a family, the symbolic sizes, a seed and a few parameters. Families:

* ``normal``: centred in the declared range, sigma a sixth of its width, clipped to it: inside
  the range, where the model is meant to work.
* ``uniform``: uniform over the declared range.
* ``quiet``: a constant inside the range plus a tiny dither (``dither`` times the range's
  half-width): dithered silence, a blank image with sensor noise. The variance is small but not
  zero, which exercises normalisation epsilons and divisions near zero.
* ``large``, ``zeros``, ``constant``, ``spikes``: stress inputs, mostly outside the range.
* ``samples``: the user's real inputs (``samples`` in the config), as they are, sliced or stacked
  to the case's batch size, or perturbed (small noise, scaling).

Masks and lengths are not drawn element by element: each padded dimension gets, per batch row, a
number of valid positions (the longest row is never padded, as a batch padded to its longest
sequence; or every row full; or every row at ``min_valid``), on the declared side. Mask inputs,
lengths inputs and the pad value of data inputs all follow that one layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from harness.core.config import Padding
from harness.core.samples import load_samples

if TYPE_CHECKING:
    import numpy as np

    from harness.core.config import GateConfig, InputSpec

FAMILIES = ("normal", "uniform", "quiet", "large", "zeros", "constant", "spikes")  # every config has them
SAMPLES = "samples"  # where the config names samples
ALL_FAMILIES = (*FAMILIES, SAMPLES)
# Families whose inputs hold one value each: PyTorch can be exact by luck there.
DEGENERATE_FAMILIES = ("zeros", "constant")
# Families meant to stay inside the declared range; the others are stress inputs.
IN_RANGE_FAMILIES = ("normal", "uniform", "quiet")
# The stress families' size (``large``'s standard deviation, the height of ``spikes``): drawn from
# these by the property tests, and judged at the largest by graph fidelity.
STRESS_MAGNITUDES = (1e2, 1e3, 1e4)
STRESS_FAMILIES = ("large", "spikes")
VALID_LAYOUTS = ("random", "all", "fewest")
PERTURBATIONS = ("none", "batched", "noise", "scale")


@dataclass(frozen=True)
class InputCase:
    """One reproducible set of feeds: enough to rebuild every input tensor exactly."""

    family: str
    sizes: Mapping[str, int]
    seed: int = 0
    magnitude: float = 1.0
    constant: float = 0.0
    spike_fraction: float = 0.01
    valid: str = "random"  # padded dimensions: "random" rows (longest full), "all" full, "fewest"
    side: str = "right"  # where padding goes when the config allows both sides
    dither: float = 1e-3  # quiet family: noise amplitude relative to the range's half-width
    sample: int = 0  # samples family: which sample
    perturb: str = "none"  # samples family: one of PERTURBATIONS
    note: str = field(default="", compare=False)

    def materialize(self, source: GateConfig | Sequence[InputSpec]) -> dict[str, np.ndarray]:
        """The feeds, from a GateConfig (every family) or its inputs alone (synthetic families)."""
        import numpy as np

        inputs = tuple(getattr(source, "inputs", source))
        if self.family == SAMPLES:
            if not hasattr(source, "samples"):
                raise ValueError("the samples family needs the GateConfig, not only its inputs")
            return _from_samples(self, source)  # type: ignore[arg-type]
        rng = np.random.default_rng(self.seed)
        layout = _valid_positions(self, inputs, np.random.default_rng([self.seed, 1]))
        feeds = {}
        for spec in inputs:
            shape = spec.concrete_shape(self.sizes)
            if spec.mask is not None:
                valid = _place(layout[spec.mask.dim], spec, shape, spec.mask.dim)
                feeds[spec.name] = (valid if spec.mask.marks == "valid" else ~valid).astype(spec.dtype)
            elif spec.lengths is not None:
                counts = layout[spec.lengths.dim].sum(axis=1)
                feeds[spec.name] = np.resize(counts, shape).astype(spec.dtype)
            else:
                values = _fill(spec, shape, self, rng)
                if spec.pad is not None:
                    valid = _place(layout[spec.pad.dim], spec, shape, spec.pad.dim)
                    values = np.where(valid, values, np.asarray(spec.pad.value).astype(spec.dtype))
                feeds[spec.name] = values
        return feeds


def families_for(config: GateConfig) -> tuple[str, ...]:
    """Every synthetic family, plus the user's samples when the config names some."""
    return (*FAMILIES, SAMPLES) if config.samples else FAMILIES


# The parameters each family reads besides its sizes and seed: a description names those that
# differ from InputCase's defaults, so that it rebuilds the case (``onnx-gate debug --case``).
FAMILY_PARAMETERS = {
    "large": ("magnitude",), "spikes": ("magnitude", "spike_fraction"), "constant": ("constant",),
    "quiet": ("constant", "dither"),
}  # fmt: skip
_DEFAULT_CASE = {name: getattr(InputCase, name) for names in FAMILY_PARAMETERS.values() for name in names}


def describe_case(case: InputCase) -> str:
    sizes = ", ".join(f"{k}={v}" for k, v in case.sizes.items())
    if case.family == SAMPLES:
        return f"samples inputs (sample={case.sample}, perturb={case.perturb}, {sizes}, seed={case.seed})"
    # repr: the shortest text that reads back as the same float (a drawn float32 constant included)
    parameters = "".join(
        f", {name}={getattr(case, name)!r}"
        for name in FAMILY_PARAMETERS.get(case.family, ())
        if getattr(case, name) != _DEFAULT_CASE[name]
    )
    extra = f", valid={case.valid}, side={case.side}" if case.valid != "random" or case.side != "right" else ""
    return f"{case.family} inputs ({sizes}, seed={case.seed}{parameters}{extra})"


def paddings(inputs: Sequence[InputSpec]) -> dict[str, Padding]:
    """Each padded dimension's layout, as the config declared it."""
    layouts: dict[str, Padding] = {}
    for spec in inputs:
        if spec.mask is not None:
            layouts.setdefault(spec.mask.dim, Padding(spec.mask.dim, spec.mask.padding, spec.mask.min_valid))
        elif spec.lengths is not None:
            layouts.setdefault(spec.lengths.dim, Padding(spec.lengths.dim, "right", spec.lengths.min_valid))
    return layouts


def _batch_dim(inputs: Sequence[InputSpec], dim: str) -> str | None:
    """The batch dimension a padded dimension's rows run along: the first other symbolic axis of
    an input that carries ``dim``, or a lengths input's own axis."""
    for spec in inputs:
        if spec.lengths is not None and spec.lengths.dim == dim:
            return next((d for d in spec.shape if isinstance(d, str)), None)
    for spec in inputs:
        if dim in spec.shape:
            return next((d for d in spec.shape if isinstance(d, str) and d != dim), None)
    return None


def _valid_positions(case: InputCase, inputs: Sequence[InputSpec], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per padded dimension, a (rows, positions) bool array: True where a position holds data."""
    import numpy as np

    layout = {}
    for dim, padding in paddings(inputs).items():
        batch = _batch_dim(inputs, dim)
        rows, length = (case.sizes[batch] if batch else 1), case.sizes[dim]
        fewest = min(padding.min_valid, length)
        if padding.side == "none" or case.valid == "all":
            counts = np.full(rows, length)
        elif case.valid == "fewest":
            counts = np.full(rows, fewest)
        else:  # a batch padded to its longest sequence: that one row holds no padding
            counts = rng.integers(fewest, length + 1, rows)
            counts[rng.integers(rows)] = length
        side = case.side if padding.side == "both" else padding.side
        positions = np.arange(length)
        if side == "left":
            valid = positions[None, :] >= (length - counts)[:, None]
        else:
            valid = positions[None, :] < counts[:, None]
        layout[dim] = valid
    return layout


def _place(valid: np.ndarray, spec: InputSpec, shape: tuple[int, ...], dim: str) -> np.ndarray:
    """``valid`` (rows, positions) broadcast into ``spec``'s shape, its axes matched by name."""
    import numpy as np

    batch = next((d for d in spec.shape if isinstance(d, str) and d != dim), None)
    index: list[Any] = []
    for axis_name, size in zip(spec.shape, shape):
        if axis_name == dim:
            index.append(slice(None))
        elif axis_name == batch:
            index.append(slice(None))
        else:
            index.append(None)
    order = [a for a in spec.shape if a in (batch, dim)]
    grid = valid if order == [batch, dim] or batch is None else valid.T
    if batch is None:
        grid = grid[0]
    return np.broadcast_to(grid[tuple(index)], shape).copy()


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
        if case.family in ("constant", "quiet"):
            return np.full(shape, int(round(np.clip(case.constant, low, high))), spec.dtype)
        return rng.integers(int(low), int(high) + 1, shape).astype(spec.dtype)
    if case.family == "normal":
        values = np.clip(rng.normal(center, spread / 3, shape), low, high)
    elif case.family == "uniform":
        values = rng.uniform(low, high, shape)
    elif case.family == "quiet":
        level = float(np.clip(case.constant, low, high))
        values = np.clip(level + rng.normal(0.0, case.dither * spread, shape), low, high)
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
        raise ValueError(f"unknown input family {case.family!r}; valid: {', '.join(ALL_FAMILIES)}")
    return values.astype(spec.dtype)


def _from_samples(case: InputCase, config: GateConfig) -> dict[str, np.ndarray]:
    """A user's sample, as it is or brought to the case's batch size, perhaps perturbed."""
    import numpy as np

    samples = load_samples(config)
    sample = samples[case.sample % len(samples)]
    rng = np.random.default_rng(case.seed)
    feeds = {}
    for spec in config.inputs:
        values = sample[spec.name]
        batch = next((d for d in spec.shape if isinstance(d, str)), None)
        if case.perturb != "none" and batch is not None and spec.shape and spec.shape[0] == batch:
            # Rows cycled from a random start: slices a larger sample, stacks a smaller one.
            rows = case.sizes.get(batch, values.shape[0])
            start = int(rng.integers(values.shape[0]))
            values = values[(start + np.arange(rows)) % values.shape[0]]
        if spec.is_float and not spec.structural:
            if case.perturb == "noise":
                scale = float(np.std(values.astype(np.float64))) or 1.0
                values = values + rng.normal(0.0, 1e-3 * scale, values.shape)
            elif case.perturb == "scale":
                values = values * rng.uniform(0.9, 1.1)
        feeds[spec.name] = np.ascontiguousarray(values).astype(spec.dtype)
    return feeds


def _without_pads(spec: InputSpec, values: np.ndarray) -> np.ndarray:
    """``values`` with the input's pad value left out: padding is part of the domain, not data."""
    import numpy as np

    if spec.pad is None:
        return values
    return values[values != np.asarray(spec.pad.value).astype(values.dtype)]


def largest_input(config: GateConfig, feeds: Mapping[str, np.ndarray]) -> float:
    """The largest finite |value| of the float inputs, pad values left out (as
    ``in_declared_domain`` leaves them out); mask, lengths and integer inputs index rather than
    scale, and do not count. 0 where there is none."""
    import numpy as np

    largest = 0.0
    for spec in config.inputs:
        values = feeds.get(spec.name)
        if values is None or not values.size or values.dtype.kind != "f" or spec.structural:
            continue
        values = _without_pads(spec, values)
        finite = values[np.isfinite(values)]
        if finite.size:
            largest = max(largest, float(np.abs(finite).max()))
    return largest


def leaving_range(config: GateConfig, case: InputCase, tries: int = 20) -> InputCase:
    """``case`` with the first seed (``seed``, ``seed + 1000``, ...) whose inputs leave the declared
    range: a sparse ``spikes`` case on a small input can draw no spike at all. ``case`` itself
    where no seed within ``tries`` does (every input integer, say)."""
    from dataclasses import replace

    for attempt in range(tries):
        moved = replace(case, seed=case.seed + 1000 * attempt)
        if not in_declared_domain(config, moved.materialize(config)):
            return moved
    return case


def in_declared_domain(config: GateConfig, feeds: Mapping[str, np.ndarray]) -> bool:
    """Whether every input value lies inside its declared domain, the normal operating region:
    its range, or its pad value (a pad id outside the token range is part of the domain)."""
    for spec in config.inputs:
        values = feeds[spec.name]
        if not values.size or values.dtype.kind not in "fiu":
            continue
        values = _without_pads(spec, values)
        if values.size and (values.min() < spec.low or values.max() > spec.high):
            return False
    return True
