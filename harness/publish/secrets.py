"""Secrets never leave the process: every message the publish step emits passes through redact()."""

from __future__ import annotations

import os

SECRET_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")


def secret_values(extra: tuple[str, ...] = ()) -> list[str]:
    values = [os.environ.get(name, "") for name in SECRET_VARIABLES] + list(extra)
    return sorted({v for v in values if len(v) >= 4}, key=len, reverse=True)


def redact(text: str, extra: tuple[str, ...] = ()) -> str:
    for value in secret_values(extra):
        text = text.replace(value, "***")
    return text
