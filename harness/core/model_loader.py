"""Build the model a config describes: import ``pkg.module:callable``, call it, load a checkpoint."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from harness.core.errors import ConfigError, GateError

if TYPE_CHECKING:
    from torch import nn


def _shown(keys: list[str], limit: int = 3) -> str:
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def import_callable(target: str, search_dirs: Sequence[Path] = (), what: str = "model") -> Any:
    module_name, _, attribute = target.partition(":")
    for directory in reversed(search_dirs):
        # User models usually sit beside their pyproject.toml, which need not be installed.
        if str(directory) not in sys.path:
            sys.path.insert(0, str(directory))
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # the user's module may raise anything at import time
        raise ConfigError(
            f"{what} {target!r} does not import: {type(exc).__name__}: {exc}"
        ) from None
    try:
        factory = getattr(module, attribute)
    except AttributeError:
        raise ConfigError(f"{what} {target!r}: module {module_name!r} has no {attribute!r}") from None
    if not callable(factory):
        raise ConfigError(f"{what} {target!r} is not callable")
    return factory


def _check_checkpoint_format(path: Path) -> None:
    """torch.save writes a zip archive (a pickle before torch 1.6); anything else makes torch.load
    fail with a pickle opcode as a KeyError, e.g. 'KeyError: 101' for a text file."""
    import zipfile

    try:
        with path.open("rb") as handle:
            head = handle.read(16)
    except FileNotFoundError:
        raise GateError(f"checkpoint {str(path)!r} does not exist") from None
    except OSError as exc:
        raise GateError(f"checkpoint {str(path)!r} cannot be read: {exc.strerror}") from None
    if not zipfile.is_zipfile(path) and not head.startswith(b"\x80"):
        raise GateError(
            f"checkpoint {str(path)!r} is not a file torch.save wrote (it starts with {head[:12]!r}); "
            "give the file of torch.save(model.state_dict(), PATH)"
        )


def load_checkpoint(model: nn.Module, path: Path) -> None:
    """Load a state_dict strictly, explaining a mismatch in one line instead of torch's essay."""
    import torch

    _check_checkpoint_format(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise GateError(f"checkpoint {str(path)!r} does not exist") from None
    except Exception as exc:
        raise GateError(f"checkpoint {str(path)!r} cannot be read: {type(exc).__name__}: {exc}") from None
    if isinstance(state, Mapping):
        for wrapper in ("state_dict", "model_state_dict"):
            if isinstance(state.get(wrapper), Mapping):
                state = state[wrapper]
    if not isinstance(state, Mapping):
        raise GateError(f"checkpoint {str(path)!r} holds a {type(state).__name__}, not a state_dict")
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_shown(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_shown(unexpected)}")
    if mismatched:
        problems.append(f"wrong shapes: {_shown(mismatched)}")
    if problems:
        raise GateError(f"checkpoint {str(path)!r} does not fit the model; " + "; ".join(problems))
    model.load_state_dict(state, strict=True)


def build_model(
    target: str,
    kwargs: Mapping[str, Any],
    checkpoint: Path | None = None,
    search_dirs: Sequence[Path] = (),
) -> nn.Module:
    """The configured model, in eval mode, on the CPU, in fp32."""
    from torch import nn

    factory = import_callable(target, search_dirs)
    try:
        model = factory(**kwargs)
    except Exception as exc:
        raise GateError(f"model {target!r} failed to build: {type(exc).__name__}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model {target!r} returned {type(model).__name__}, not a torch.nn.Module")
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    return model.float().cpu().eval()
