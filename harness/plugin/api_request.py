"""What the gate's plugin and the Python API share, so that neither imports the other: the stash
keys of the session and its outcome, and the request object by which the API hands a model to the
plugin."""

from __future__ import annotations

from contextlib import nullcontext
from typing import TYPE_CHECKING, Any, Mapping

import pytest

from harness.report.training_log import export_line, log

if TYPE_CHECKING:
    from torch import nn

    from harness.gate.session import GateSession
    from harness.report.outcome import GateOutcome

GATE_KEY = pytest.StashKey["GateSession"]()
OUTCOME_KEY = pytest.StashKey["GateOutcome"]()  # set at the session's end, when a check ran


class ApiRequest:
    """A pytest plugin object that hands the gate a model and config overrides, and takes back
    the session's outcome. The gate's plugin looks for it in pytest_configure."""

    def __init__(
        self, model: nn.Module | None, overrides: Mapping[str, Any], publish_tags: Mapping[str, str],
        source_run_id: str | None = None,
    ) -> None:
        self.model = model
        self.source_run_id = source_run_id
        self.object_class = _object_class(model)
        self.overrides = dict(overrides)
        self.publish_tags = dict(publish_tags)
        self.outcome: GateOutcome | None = None

    @pytest.hookimpl(trylast=True)  # after the gate's plugin has exported
    def pytest_collection_finish(self, session: Any) -> None:
        """The export line, as soon as the export is done; the caller's handlers write it, with
        pytest's capturing paused so that it reaches them."""
        gate = session.config.stash.get(GATE_KEY, None)
        if gate is None or not session.items:
            return

        cache = gate.artifact_cache.status if gate.artifact_cache is not None else None
        capture = session.config.pluginmanager.getplugin("capturemanager")
        with capture.global_and_fixture_disabled() if capture is not None else nullcontext():
            log([export_line(gate.artifact, gate.artifact_error, cache)])

    @pytest.hookimpl(trylast=True)  # after the gate's own session end has built the outcome
    def pytest_sessionfinish(self, session: Any) -> None:
        self.outcome = session.config.stash.get(OUTCOME_KEY, None)


def api_request(config: pytest.Config) -> ApiRequest | None:
    """The Python API's request in this session, if the API started it."""
    return next((p for p in config.pluginmanager.get_plugins() if isinstance(p, ApiRequest)), None)


def _object_class(model: nn.Module | None) -> str | None:
    """``module:QualName`` of a model object that is not the built-in default's class (config.load
    describes such an object by its own config layers only), else None."""
    from harness.models.localization_net import LocalizationNet  # defers torch
    if model is None:
        return None

    if isinstance(model, LocalizationNet):
        return None
    cls = type(model)
    return f"{cls.__module__}:{cls.__qualname__}"


def gate_of(config: pytest.Config) -> GateSession | None:
    """The gate session of this pytest session, once pytest_configure made it."""
    return config.stash.get(GATE_KEY, None)
