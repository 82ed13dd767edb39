"""What the gate's plugin and the Python API share, so that neither imports the other: the stash
key of the session and the request object by which the API hands a model to the plugin."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import pytest

if TYPE_CHECKING:
    from torch import nn

    from harness.session import GateSession

GATE_KEY = pytest.StashKey["GateSession"]()


class ApiRequest:
    """A pytest plugin object that hands the gate a model and config overrides, and takes back
    the finished session. The gate's plugin looks for it in pytest_configure."""

    def __init__(self, model: nn.Module | None, overrides: Mapping[str, Any], publish_tags: Mapping[str, str]) -> None:
        self.model = model
        self.overrides = dict(overrides)
        self.publish_tags = dict(publish_tags)
        self.gate: GateSession | None = None

    def pytest_sessionfinish(self, session: Any) -> None:
        self.gate = session.config.stash.get(GATE_KEY, None)


def api_request(config: pytest.Config) -> ApiRequest | None:
    """The Python API's request in this session, if the API started it."""
    return next((p for p in config.pluginmanager.get_plugins() if isinstance(p, ApiRequest)), None)
