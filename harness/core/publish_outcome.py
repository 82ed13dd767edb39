"""What publishing says back, whichever target it went to: the outcome, and the two errors a
target raises. The fields name what every target has (where the bytes went, the registered
version, the record of the gate run); each target names them in its own words in gate.json
(``labels``: the S3 + MLflow target's location is its ``s3_uri``)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from harness.core.errors import GateError, first_line
from harness.core.secrets import redact

Notify = Callable[[str], None]


def notify_stderr(message: str) -> None:
    print(f"onnx-gate publish: {message}", file=sys.stderr, flush=True)


class PublishError(GateError):
    """Publishing failed; the message is safe to show (no secrets)."""


class PublishRefused(PublishError):
    """Publishing would break a promise of the registry (e.g. mix two models' versions)."""


# gate.json's key for each field a target may name in its own words.
GENERIC_LABELS = {"location": "location", "record_id": "record_id", "record_url": "record_url"}


@dataclass
class PublishOutcome:
    status: str  # "published", "refused", "failed"
    reason: str = ""
    location: str | None = None  # where the artifact's bytes are, as the target addresses them
    sha256: str | None = None
    uploaded: bool = False  # False when the bytes were already there
    registered_name: str | None = None
    version: str | None = None
    created_version: bool = False
    alias: str | None = None
    record_id: str | None = None  # the gate run's record at the target (e.g. an MLflow run)
    record_url: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=lambda: dict(GENERIC_LABELS))

    def __bool__(self) -> bool:
        return self.status == "published"

    def __str__(self) -> str:
        if self.status == "published":
            how = "new version" if self.created_version else "existing version"
            return f"PUBLISHED | {self.location} -> {self.registered_name} v{self.version} @{self.alias} ({how})"
        return f"{self.status.upper()} | {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        """gate.json's "publish" section, in the target's words."""
        return {
            "status": self.status, "reason": self.reason, self.labels["location"]: self.location,
            "sha256": self.sha256, "uploaded": self.uploaded, "registered_name": self.registered_name,
            "version": self.version, "created_version": self.created_version, "alias": self.alias,
            self.labels["record_id"]: self.record_id, self.labels["record_url"]: self.record_url, "extra": self.extra,
        }  # fmt: skip

    def markdown(self) -> list[str]:
        """summary.md's "Publish" section."""
        lines = ["## Publish", "", f"- status: **{self.status}**"]
        if self.reason:
            lines.append(f"- reason: {self.reason}")
        shown = (("location", self.location), ("sha256", self.sha256), ("registered_name", self.registered_name),
                 ("version", self.version), ("alias", self.alias), ("record_url", self.record_url))  # fmt: skip
        for key, value in shown:
            if value:
                lines.append(f"- {self.labels.get(key, key)}: `{value}`")
        if self.version:
            lines.append(f"- new version: {self.created_version}; uploaded now: {self.uploaded}")
        return lines


def failure(exc: Exception, where: str) -> tuple[str, str]:
    """The status and the one safe line (no secrets) for an exception a target did not expect to
    recover from: its own refusal, its own error, or an MLflow or network error ``where``."""
    if isinstance(exc, PublishRefused):
        return "refused", redact(str(exc))
    if isinstance(exc, GateError):
        return "failed", redact(str(exc))
    return "failed", redact(f"{where} failed: {type(exc).__name__}: {first_line(exc)}"[:500])
