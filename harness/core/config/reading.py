"""The two checks every config table goes through: known keys (with the nearest valid one named)
and a value of the expected type, each a one-line ConfigError."""

from __future__ import annotations

import difflib
from typing import Any, Mapping

from harness.core.errors import ConfigError


def check_keys(table: Mapping[str, Any], valid: set[str], where: str) -> None:
    for key in table:
        if key not in valid:
            close = difflib.get_close_matches(key, sorted(valid), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"unknown key {key!r} in {where}.{hint} Valid keys: {', '.join(sorted(valid))}"
            )


def expect(value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    if isinstance(value, bool) and kind in (int, float, (int, float)):
        raise ConfigError(f"{what} must be a number, got {value!r}")
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigError(f"{what} must be {names}, got {value!r}")
    return value
