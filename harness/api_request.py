"""What the gate's plugin and the Python API share, so that neither imports the other: the stash
keys of the session and its outcome, and the request object by which the API hands a model to the
plugin."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import pytest

if TYPE_CHECKING:
    from torch import nn

    from harness.outcome import GateOutcome
    from harness.session import GateSession

GATE_KEY = pytest.StashKey["GateSession"]()
OUTCOME_KEY = pytest.StashKey["GateOutcome"]()  # set at the session's end, when a check ran


class ApiRequest:
    """A pytest plugin object that hands the gate a model and config overrides, and takes back
    the session's outcome. The gate's plugin looks for it in pytest_configure."""

    def __init__(self, model: nn.Module | None, overrides: Mapping[str, Any], publish_tags: Mapping[str, str]) -> None:
        self.model = model
        self.overrides = dict(overrides)
        self.publish_tags = dict(publish_tags)
        self.outcome: GateOutcome | None = None

    @pytest.hookimpl(trylast=True)  # after the gate's own session end has built the outcome
    def pytest_sessionfinish(self, session: Any) -> None:
        self.outcome = session.config.stash.get(OUTCOME_KEY, None)


def api_request(config: pytest.Config) -> ApiRequest | None:
    """The Python API's request in this session, if the API started it."""
    return next((p for p in config.pluginmanager.get_plugins() if isinstance(p, ApiRequest)), None)
