"""The process state a training script owns, put back after an in-process gate.

``export_and_register_model`` runs pytest inside the caller's process. pytest, Hypothesis, the
gate's profiles, its model loader, the benchmarks and MLflow's fluent API all change global
state on the way: the loaded Hypothesis profile, logger levels and handlers, torch's thread
count, the random generators, warnings filters, ``sys.path``, environment variables, MLflow's
tracking URI and active experiment, and the model's train/eval flags. ``preserved`` takes a
snapshot before the gate and restores it afterwards, whether the gate passed, failed or raised.

Loggers that a library creates while the gate runs (its import configures them) stay as the
library made them: the caller has no earlier state for them to return to.
"""

from __future__ import annotations

import logging
import os
import random
import sys
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Iterator, Sequence

if TYPE_CHECKING:
    from torch import nn


@dataclass
class _LoggerState:
    level: int
    disabled: bool
    propagate: bool
    handlers: list[logging.Handler]
    filters: list[Any]


def _loggers() -> dict[str, logging.Logger]:
    found = {name: logger for name, logger in logging.Logger.manager.loggerDict.items() if isinstance(logger, logging.Logger)}
    return {"": logging.getLogger(), **found}


def _hypothesis_state() -> tuple[Any, ...] | None:
    if "hypothesis" not in sys.modules:
        return None
    from hypothesis import _settings

    settings = _settings.settings
    return settings._current_profile, dict(settings._profiles), _settings.default_variable.value  # type: ignore[attr-defined]


def _restore_hypothesis(state: tuple[Any, ...] | None) -> None:
    if "hypothesis" not in sys.modules:
        return
    from hypothesis import _settings

    settings = _settings.settings
    if state is None:  # first imported by the gate: back to Hypothesis's own start
        state = (None, {"default": settings._profiles["default"]}, settings._profiles["default"])  # type: ignore[attr-defined]
    current, profiles, default = state
    settings._current_profile = current  # type: ignore[attr-defined]
    settings._profiles.clear()  # type: ignore[attr-defined]
    settings._profiles.update(profiles)  # type: ignore[attr-defined]
    _settings.default_variable.value = default


def _mlflow_state() -> tuple[Any, ...] | None:
    """MLflow's fluent globals: tracking and registry URIs, active experiment, active runs."""
    if "mlflow" not in sys.modules:
        return None
    from mlflow.tracking import fluent
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    return (
        tracking_utils._tracking_uri, registry_utils._registry_uri, fluent._active_experiment_id,
        list(fluent._active_run_stack.get()),
    )  # fmt: skip


def _restore_mlflow(state: tuple[Any, ...] | None) -> None:
    if "mlflow" not in sys.modules:
        return
    from mlflow.tracking import fluent
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    tracking_uri, registry_uri, experiment_id, runs = state if state is not None else (None, None, None, [])
    tracking_utils._tracking_uri = tracking_uri
    registry_utils._registry_uri = registry_uri
    fluent._active_experiment_id = experiment_id
    fluent._active_run_stack.set(list(runs))


@dataclass
class CallerState:
    """One snapshot; ``restore`` puts it back."""

    cwd: str
    environ: dict[str, str]
    sys_path: list[str]
    warning_filters: list[Any]
    showwarning: Any
    loggers: dict[str, _LoggerState]
    logging_disable: int
    python_random: Any
    numpy_random: Any
    torch_random: Any
    torch_threads: int
    torch_default_dtype: Any
    grad_enabled: bool
    deterministic: tuple[bool, bool]
    training_flags: list[tuple[Any, bool]]
    hypothesis: tuple[Any, ...] | None
    mlflow: tuple[Any, ...] | None
    streams: tuple[Any, Any]

    @classmethod
    def snapshot(cls, model: nn.Module | None = None) -> CallerState:
        import numpy as np
        import torch

        return cls(
            cwd=os.getcwd(),
            environ=dict(os.environ),
            sys_path=list(sys.path),
            warning_filters=list(warnings.filters),
            showwarning=warnings.showwarning,
            loggers={
                name: _LoggerState(lg.level, lg.disabled, lg.propagate, list(lg.handlers), list(lg.filters))
                for name, lg in _loggers().items()
            },
            logging_disable=logging.root.manager.disable,
            python_random=random.getstate(),
            numpy_random=np.random.get_state(),
            torch_random=torch.get_rng_state(),
            torch_threads=torch.get_num_threads(),
            torch_default_dtype=torch.get_default_dtype(),
            grad_enabled=torch.is_grad_enabled(),
            deterministic=(
                torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
            ),
            training_flags=[(module, module.training) for module in model.modules()] if model is not None else [],
            hypothesis=_hypothesis_state(),
            mlflow=_mlflow_state(),
            streams=(sys.stdout, sys.stderr),
        )  # fmt: skip

    def restore(self) -> None:
        import numpy as np
        import torch

        # torch first: some of its setters import more of torch, which sets environment
        # variables and warnings filters of its own, which the lines below then undo.
        torch.set_num_threads(self.torch_threads)
        torch.set_default_dtype(self.torch_default_dtype)
        torch.set_grad_enabled(self.grad_enabled)
        if (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()) != self.deterministic:
            torch.use_deterministic_algorithms(self.deterministic[0], warn_only=self.deterministic[1])
        torch.set_rng_state(self.torch_random)
        np.random.set_state(self.numpy_random)
        random.setstate(self.python_random)
        for module, training in self.training_flags:
            module.training = training
        _restore_hypothesis(self.hypothesis)
        _restore_mlflow(self.mlflow)
        loggers = _loggers()
        for name, state in self.loggers.items():
            logger = loggers.get(name)
            if logger is None:
                continue
            logger.setLevel(state.level)
            logger.disabled, logger.propagate = state.disabled, state.propagate
            logger.handlers[:] = state.handlers
            logger.filters[:] = state.filters
        logging.disable(self.logging_disable)
        warnings.filters[:] = self.warning_filters
        warnings._filters_mutated()  # type: ignore[attr-defined]  # drops the warning registries' cache
        warnings.showwarning = self.showwarning
        if os.getcwd() != self.cwd:
            os.chdir(self.cwd)
        for name in set(os.environ) - set(self.environ):
            del os.environ[name]
        for name, value in self.environ.items():
            if os.environ.get(name) != value:
                os.environ[name] = value
        sys.path[:] = self.sys_path
        sys.stdout, sys.stderr = self.streams


def _take_modules_under(folders: Sequence[Path]) -> dict[str, ModuleType]:
    """The modules loaded from files under ``folders``, removed from ``sys.modules``."""
    roots = [folder.resolve() for folder in folders]
    # Only a file whose path names a folder's last part is resolved: a training script's process
    # holds thousands of modules, and resolving each took 0.2 s per gate.
    names = tuple(root.name for root in roots)
    taken = {}
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if not file or not any(part in file for part in names):
            continue
        if any(root in Path(file).resolve().parents for root in roots):
            taken[name] = sys.modules.pop(name)
    return taken


@contextmanager
def preserved(model: nn.Module | None = None, *, test_folders: Sequence[Path] = ()) -> Iterator[CallerState]:
    """The caller's state as it was on entry, restored on exit however the block ends.

    ``test_folders``: the gate's test modules are imported afresh by each gate and dropped after
    it. Hypothesis binds a test's settings when its module is imported, so a module kept from an
    earlier gate in the process would run this gate's checks under that gate's profile: a `ci`
    gate after a `dev` one drew 5 random examples instead of 60 derandomized ones."""
    state = CallerState.snapshot(model)
    held = _take_modules_under(test_folders)
    try:
        yield state
    finally:
        try:
            _take_modules_under(test_folders)
        finally:
            sys.modules.update(held)
            state.restore()
