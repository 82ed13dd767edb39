"""Errors the gate reports to users as one line, never as a traceback."""


class GateError(Exception):
    """Something the user can fix: bad configuration, a model that does not import, a bad file."""


class ConfigError(GateError):
    """The gate's configuration is invalid."""


class ArtifactError(GateError):
    """The ONNX artifact could not be produced, loaded or validated."""


def first_line(value: object, default: str = "") -> str:
    """The first line of ``str(value)`` (an exception's message, a result's report), or ``default``
    when it says nothing: errors are reported in one line."""
    text = str(value).strip()
    return text.splitlines()[0] if text else default
