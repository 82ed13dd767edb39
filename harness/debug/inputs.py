"""Which input debug runs on: a case as the gate prints it, explicit arrays, or a report's failure."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.core.config import GateConfig
from harness.core.errors import GateError
from harness.core.inputs import ALL_FAMILIES, InputCase

if TYPE_CHECKING:
    import numpy as np

CASE_FIELDS = {
    "seed": int, "magnitude": float, "constant": float, "spike_fraction": float, "valid": str, "side": str,
    "dither": float, "sample": int, "perturb": str,
}  # fmt: skip
PAIR = re.compile(r"'?(\w+)'?\s*[=:]\s*'?([-+\w.]+)'?")


def parse_case(text: str, config: GateConfig) -> InputCase:
    """A case from the text the gate prints (``normal inputs (batch=1, seed=5)``), a plain form
    (``normal batch=1 seed=5``) or Hypothesis's ``InputCase(family='normal', sizes={'batch': 1}, ...)``.
    Sizes not given take the export's trace size."""
    words = re.findall(r"[a-z]+", text)
    family = next((w for w in words if w in ALL_FAMILIES), None)
    if family is None:
        raise GateError(f"--case {text!r} names no input family; valid: {', '.join(ALL_FAMILIES)}")
    sizes = dict(config.trace_sizes)
    fields: dict[str, Any] = {}
    for key, value in PAIR.findall(text):
        if key in ("family", "sizes", "note"):
            continue
        try:
            if key in config.dims:
                sizes[key] = int(value)
            elif key in CASE_FIELDS:
                fields[key] = CASE_FIELDS[key](value)
            else:
                valid = ", ".join([*config.dims, *CASE_FIELDS])
                raise GateError(f"--case {text!r}: unknown key {key!r}; valid: {valid}")
        except ValueError:
            raise GateError(f"--case {text!r}: {key}={value!r} is not a number") from None
    for name, size in sizes.items():
        dim = config.dims[name]
        if not dim.low <= size <= dim.high:
            raise GateError(f"--case {text!r}: {name}={size} is outside its range [{dim.low}, {dim.high}]")
    return InputCase(family=family, sizes=sizes, **fields)


def load_npz(path: Path, config: GateConfig) -> dict[str, np.ndarray]:
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except FileNotFoundError:
        raise GateError(f"--inputs {str(path)!r} does not exist") from None
    except Exception as exc:
        raise GateError(f"--inputs {str(path)!r} is not a readable .npz file: {type(exc).__name__}") from None
    names = [spec.name for spec in config.inputs]
    if sorted(arrays) != sorted(names):
        raise GateError(
            f"--inputs {str(path)!r} holds arrays {sorted(arrays)}; the model's inputs are {names}"
        )
    feeds = {}
    for spec in config.inputs:
        array = arrays[spec.name]
        if array.dtype != np.dtype(spec.dtype):
            raise GateError(
                f"--inputs: array {spec.name!r} is {array.dtype}, the config declares {spec.dtype}"
            )
        feeds[spec.name] = array
    return feeds


def report_folder(report_dir: Path, run: str | None) -> Path:
    """The run's folder: ``run`` as an id or unique prefix, else the latest run."""
    if run is None:
        latest = report_dir / "latest"
        if not (latest / "gate.json").is_file():
            raise GateError(
                f"no gate report under {str(report_dir)!r}: run `onnx-gate run` first, "
                "or give --case/--inputs"
            )
        return latest.resolve()
    if Path(run).is_dir():
        return Path(run).resolve()
    matches = sorted(
        p for p in report_dir.glob(f"{run}*") if (p / "gate.json").is_file() and p.name != "latest"
    )
    if len(matches) != 1:
        found = "no run" if not matches else f"{len(matches)} runs"
        raise GateError(f"--from-report {run!r}: {found} under {str(report_dir)!r} match it; give a run id")
    return matches[0]


def failing_case(folder: Path, config: GateConfig) -> InputCase:
    """The report's shrunk failing parity case: the structured record when present, else parsed
    from the first ``parity_failures`` line."""
    document = json.loads((folder / "gate.json").read_text(encoding="utf-8"))
    recorded = document.get("parity_failure_case")
    if isinstance(recorded, dict):
        # Every field the report kept: a padded or a samples case needs valid/side/sample/perturb too.
        fields = {k: kind(recorded[k]) for k, kind in CASE_FIELDS.items() if recorded.get(k) is not None}
        return InputCase(family=recorded["family"], sizes=dict(recorded["sizes"]), **fields)
    failures = document.get("parity_failures") or []
    if not failures:
        raise GateError(
            f"the report {folder.name} records no parity failure; "
            "give --case or --inputs to debug another input"
        )
    match = re.search(r" on (.*)$", failures[0])
    return parse_case(match.group(1) if match else failures[0], config)
