"""``--gate-baseline``: the production model to time the candidate against, as the user names it
(``models:/NAME@ALIAS``, ``models:/NAME/VERSION`` or an ONNX file), checked when the session starts."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from harness.core.errors import GateError

REGISTRY_SPEC = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[\w-]+)|/(?P<version>\d+))$")


@dataclass(frozen=True)
class BaselineSpec:
    """``models:/NAME@ALIAS``, ``models:/NAME/VERSION`` or an ONNX file."""

    text: str
    name: str | None = None
    alias: str | None = None
    version: str | None = None
    file: Path | None = None


def parse_spec(text: str, invocation_dir: Path) -> BaselineSpec:
    match = REGISTRY_SPEC.match(text)
    if match:
        return BaselineSpec(text, match["name"], match["alias"], match["version"])
    if text.startswith("models:/"):
        raise GateError(f"--gate-baseline {text!r} is not models:/NAME@ALIAS or models:/NAME/VERSION "
                        "(e.g. models:/heimdall-localization-onnx@staging)")
    path = Path(text) if Path(text).is_absolute() else invocation_dir / text
    if not path.is_file():
        raise GateError(f"--gate-baseline {text!r} is neither models:/NAME@ALIAS, models:/NAME/VERSION nor an "
                        "existing ONNX file")
    return BaselineSpec(text, file=path)
