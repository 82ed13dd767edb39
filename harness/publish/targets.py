"""Where a passed gate publishes: a target chosen by ``[publish] target``, the way pytest-benchmark
chooses its storage by URI. A target is one module with

- ``LABELS``: gate.json's names for the outcome's location, record id and record URL (e.g.
  ``s3_uri``), see harness/core/publish_outcome.py;
- ``publish(request, environ=None, *, notify) -> PublishOutcome``: never raises for a publishing
  failure, the outcome says;
- ``replace_reports(outcome, settings, report_dir)``: put the final gate.json and summary.md
  (which hold the publish section) where the published record keeps its reports.

A target of your own is a module named by its dotted path (``target = "mypkg.gate_target"``); the
built-in ones have short names.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Mapping, Protocol

from harness.core.config import TARGETS
from harness.core.errors import ConfigError, first_line

if TYPE_CHECKING:
    from pathlib import Path

    from harness.core.config import PublishConfig
    from harness.core.publish_outcome import Notify, PublishOutcome
    from harness.publish.flow import PublishRequest



class PublishTarget(Protocol):
    LABELS: Mapping[str, str]

    def publish(
        self, request: PublishRequest, environ: Mapping[str, str] | None = None, *, notify: Notify = ...
    ) -> PublishOutcome: ...

    def replace_reports(self, outcome: PublishOutcome, settings: PublishConfig, report_dir: Path) -> None: ...


def target_module(name: str) -> str:
    """The module of target ``name``: a built-in short name, or a dotted module path as it is."""
    return TARGETS.get(name, name)


def publish_target(settings: PublishConfig) -> PublishTarget:
    """The configured target's module. Raises ConfigError, in one line, for a module that does not
    import or lacks the interface (the plugin asks before the gate runs, with --gate-publish)."""
    name = target_module(settings.target)
    try:
        module = importlib.import_module(name)
    except ImportError as exc:
        raise ConfigError(
            f"publish.target {settings.target!r}: module {name!r} does not import ({type(exc).__name__}: "
            f"{first_line(exc)}); give a built-in target ({', '.join(TARGETS)}) or an importable module"
        ) from None
    missing = [attribute for attribute in ("LABELS", "publish", "replace_reports") if not hasattr(module, attribute)]
    if missing:
        raise ConfigError(
            f"publish.target {settings.target!r}: module {name!r} lacks {', '.join(missing)}; a target defines "
            "LABELS, publish() and replace_reports() (harness/publish/targets.py)"
        )
    return module  # type: ignore[return-value]
