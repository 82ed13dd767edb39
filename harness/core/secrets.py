"""Secrets never leave the process: every message the publish step emits passes through redact()."""

from __future__ import annotations

import os
import re
from urllib.parse import unquote, urlsplit, urlunsplit

SECRET_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")
# scheme://userinfo@ : the userinfo of any URI, whatever the secret in it is called.
# Greedy up to the last '@' before the host: a password may hold a raw '@' of its own.
USERINFO = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://)[^/\s'\"`]+@")


def secret_values(extra: tuple[str, ...] = ()) -> list[str]:
    values = [os.environ.get(name, "") for name in SECRET_VARIABLES] + list(extra)
    return sorted({v for v in values if len(v) >= 4}, key=len, reverse=True)


def redact(text: str, extra: tuple[str, ...] = ()) -> str:
    text = USERINFO.sub(r"\1***@", text)
    for value in secret_values(extra):
        text = text.replace(value, "***")
    return text


def split_userinfo(uri: str) -> tuple[str, tuple[str, str] | None]:
    """``uri`` without its user:password@, and that user and password (None when there is none)."""
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri, None
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    return urlunsplit(parts._replace(netloc=host)), (unquote(user), unquote(password))
