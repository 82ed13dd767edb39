"""The user's real inputs: ``samples`` in the config names .npz files (one array per input, batch
first) or a ``module:callable`` returning batches (dicts of arrays). Loaded once per session and
checked against the declared inputs, so that a bad sample stops the gate in one line up front."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from harness.core.errors import ConfigError, first_line
from harness.core.model_loader import import_callable

if TYPE_CHECKING:
    import numpy as np

    from harness.core.config import GateConfig

_LOADED: dict[Any, tuple[dict[str, np.ndarray], ...]] = {}


def load_samples(config: GateConfig) -> tuple[dict[str, np.ndarray], ...]:
    """Every sample as a dict of input arrays, validated; () when the config names none."""
    if not config.samples:
        return ()
    key = (config.samples, tuple(spec.name for spec in config.inputs), config.search_dirs)
    if key not in _LOADED:
        raw = _from_callable(config) if isinstance(config.samples, str) else _from_files(config)
        _LOADED[key] = tuple(_checked(sample, where, config) for where, sample in raw)
        if not _LOADED[key]:
            raise ConfigError(f"samples {_shown(config)} gave no sample")
    return _LOADED[key]


def _shown(config: GateConfig) -> str:
    return repr(config.samples) if isinstance(config.samples, str) else f"({len(config.samples)} files)"


def _from_files(config: GateConfig) -> list[tuple[str, dict[str, Any]]]:
    import numpy as np

    loaded = []
    for path in config.samples:
        try:
            with np.load(path, allow_pickle=False) as data:
                loaded.append((path.name, {name: data[name] for name in data.files}))
        except Exception as exc:
            raise ConfigError(f"sample file {path.name!r} is not a readable .npz file: {type(exc).__name__}") from None
    return loaded


def _from_callable(config: GateConfig) -> list[tuple[str, dict[str, Any]]]:
    assert isinstance(config.samples, str)
    function = import_callable(config.samples, config.search_dirs, what="samples")
    try:
        batches = list(function())
    except Exception as exc:
        first = first_line(exc)
        raise ConfigError(f"samples {config.samples!r} raised {type(exc).__name__}: {first}") from None
    return [(f"{config.samples}()[{i}]", batch) for i, batch in enumerate(batches)]


def _checked(sample: Any, where: str, config: GateConfig) -> dict[str, np.ndarray]:
    import numpy as np

    if not isinstance(sample, dict):
        raise ConfigError(f"sample {where} must map input names to arrays, got {type(sample).__name__}")
    missing = [spec.name for spec in config.inputs if spec.name not in sample]
    if missing:
        raise ConfigError(f"sample {where} lacks input(s) {missing}; it holds {sorted(sample)}")
    checked = {}
    for spec in config.inputs:
        values = np.asarray(sample[spec.name])
        if values.ndim != len(spec.shape):
            raise ConfigError(
                f"sample {where}: {spec.name!r} has {values.ndim} axes, the input's shape {list(spec.shape)} has {len(spec.shape)}"
            )
        fixed = [(axis, size) for axis, size in enumerate(spec.shape) if isinstance(size, int) and values.shape[axis] != size]
        if fixed:
            axis, size = fixed[0]
            raise ConfigError(f"sample {where}: {spec.name!r} axis {axis} is {values.shape[axis]}, the shape fixes it at {size}")
        if values.dtype.kind not in "biuf":
            raise ConfigError(f"sample {where}: {spec.name!r} holds {values.dtype}, not numbers")
        checked[spec.name] = values.astype(spec.dtype)
    return checked
