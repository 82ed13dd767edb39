"""Render a debug result: the terminal table, debug.md, debug.png and the replay bundle."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from harness.align import probe
from harness.align.verdict import culprit_sentence
from harness.core.plots import saved_figure

if TYPE_CHECKING:
    from harness.align.verdict import ModuleRow
    from harness.debug.diagnose import DebugResult
    from harness.debug.isolate import Isolation

HEADER = ("module", "class", "source", "ONNX ops", "max abs error", "floor", "ratio", "inputs")
TERMINAL_CONTEXT = 8  # rows shown on either side of the divergence; debug.md has them all


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _cells(row: ModuleRow, culprit: bool) -> tuple[str, ...]:
    inputs = (
        "-" if row.cls == "graph output" else {True: "within", False: "off", None: "unchecked"}[row.inputs_ok]
    )
    name = f"**{row.module}**" if culprit else row.module
    ratio = ("NaN/Inf" if row.nonfinite else _num(row.ratio)) + (" !" if row.exceeds else "")
    return (name, row.cls, row.source, row.ops, _num(row.max_abs), _num(row.floor), ratio, inputs)


def table_rows(result: DebugResult, *, limit: bool) -> list[tuple[str, ...]]:
    """Culprit first, then the modules in execution order, then the graph outputs."""
    verdict = (
        result.production_verdict if result.fusion_only and result.production_verdict else result.verdict
    )
    rows = verdict.rows
    culprit = verdict.culprit or verdict.suspect
    body = rows
    if limit and len(rows) > 2 * TERMINAL_CONTEXT + 1:
        first = next((i for i, r in enumerate(rows) if r.exceeds), len(rows) - TERMINAL_CONTEXT)
        body = rows[max(0, first - TERMINAL_CONTEXT) : first + TERMINAL_CONTEXT]
    lines = [_cells(culprit, True)] if culprit else []
    lines += [_cells(row, False) for row in body]
    lines += [_cells(row, False) for row in verdict.outputs.values()]
    return lines


def _exact_lines(result: DebugResult) -> list[str]:
    """The exact verdict first: is the graph the model, in float64, module by module? It says
    whether what ONNX Runtime's fp32 values show below is an export defect or the runtime's precision."""
    walk = result.exact
    if walk is None:
        reason = result.exact_unavailable or "not run"
        return [f"Graph fidelity (float64): not judged ({reason}); the attribution below is by fp32 noise only."]
    departure = walk.departure()
    if departure is not None:
        return [f"The graph is not the model (exact, in float64): {departure}."]
    judged = [c for _, c in walk.modules] + list(walk.outputs)
    worst = max((c.ratio for c in judged), default=0.0)
    runtime = (
        " What ONNX Runtime's fp32 values show below is the runtime's precision, not the export."
        if result.mismatch else ""
    )
    return [
        f"The graph is the model (exact, in float64): {len(walk.modules)} aligned modules and "
        f"{len(walk.outputs)} outputs within their fidelity bounds (worst {worst:.2g}x).{runtime}"
    ]


def headline(result: DebugResult, *, unaligned_at: str = "below") -> list[str]:
    """What was found, verdict first, in a few sentences; ``unaligned_at`` says where the modules
    that could not be aligned are listed."""
    alignment, verdict = result.alignment, result.verdict
    factor = verdict.factor
    lines: list[str] = []
    if alignment.scheme == "none":
        lines.append(
            "UNATTRIBUTED | the ONNX file carries no scope information (no `pkg.torch.onnx.name_scopes` "
            "node metadata, no `/module/Op` node names), so no ONNX value can be tied to a PyTorch module. "
            "Only the final outputs are compared below. To attribute a mismatch, export the model with "
            "onnx-gate (or torch.onnx, dynamo or TorchScript) and keep node names and metadata when "
            "post-processing the file."
        )
    if result.fusion_only:
        lines.append(
            "FAILED | the mismatch exists only under ONNX Runtime's graph optimisation (ORT_ENABLE_ALL); "
            "with optimisation off the outputs match PyTorch within noise: a fusion or optimiser bug."
        )
    used = result.production_verdict if result.fusion_only and result.production_verdict else verdict
    culprit = used.culprit
    if culprit is not None:
        lines.append(culprit_sentence(culprit, factor))
        if result.isolation is not None:
            lines.append(f"Isolation: {result.isolation}")
    elif used.suspect is not None:
        lines.append(
            f"FAILED | the first module to diverge is `{used.suspect.module}` ({used.suspect.cls}, "
            f"{used.suspect.source}), but its ONNX inputs could not be matched to PyTorch's, so the "
            "mismatch may start before it."
        )
    elif result.mismatch and alignment.scheme != "none":
        lines.append(
            "FAILED | the outputs diverge but no aligned module does: the mismatch lies in ops "
            "outside every aligned module (the model's own forward code or an unaligned module listed "
            f"{unaligned_at})."
        )
    elif not result.mismatch:
        lines.append(
            f"PASSED | ONNX Runtime matches PyTorch within {factor:g}x its fp32 noise at every aligned "
            "module and output on this input, with and without graph optimisation: no culprit."
        )
    lines += _exact_lines(result)
    aligned = len(alignment.aligned) - len(verdict.shape_mismatch)
    unaligned = len(alignment.unaligned) + len(verdict.shape_mismatch)
    lines.append(
        f"Aligned {aligned} of {result.named_modules} named modules ({alignment.scheme}); "
        f"{unaligned} not aligned, listed {unaligned_at}."
    )
    if result.fp64_unavailable:
        lines.append(f"No noise floor: the model cannot run in float64 ({result.fp64_unavailable}).")
    if result.factor_note:
        lines.append(result.factor_note + ".")
    return lines


def _levels(result: DebugResult) -> str:
    def describe(ok: dict[str, bool]) -> str:
        return ", ".join(f"{name} {'within' if passed else 'OFF'}" for name, passed in ok.items())

    return (f"Final outputs vs fp64 noise: optimisation off: {describe(result.unoptimised_ok)}; "
            f"ORT_ENABLE_ALL: {describe(result.production_ok)}.")  # fmt: skip


def _unaligned(result: DebugResult) -> dict[str, str]:
    return {**result.alignment.unaligned, **result.verdict.shape_mismatch}


def terminal_text(result: DebugResult) -> str:
    rows = [HEADER, *table_rows(result, limit=True)]
    rows = [tuple(c.replace("**", "") for c in row) for row in rows]
    widths = [min(max(len(r[i]) for r in rows), 48) for i in range(len(HEADER))]
    lines = [*headline(result), _levels(result), ""]
    lines += ["  ".join(cell[:48].ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    unaligned = _unaligned(result)
    if unaligned:
        lines += ["", f"not aligned ({len(unaligned)}):"]
        lines += [f"  {name}: {why}" for name, why in list(unaligned.items())[:15]]
        if len(unaligned) > 15:
            lines.append(f"  ... {len(unaligned) - 15} more in debug.md")
    lines.append(f"debug took {result.seconds:.1f} s, peak RSS {result.peak_rss_mb:.0f} MB")
    return "\n".join(lines)


def markdown(result: DebugResult) -> str:
    request = result.request
    lines = [f"# onnx-gate debug: {request.onnx_path.name}", "", f"Input: {request.case}", ""]
    lines += [f"- {line}" for line in [*headline(result), _levels(result)]]
    lines += ["", "## Modules (culprit first, then execution order)", "",
              "| " + " | ".join(HEADER) + " |", "|" + " --- |" * len(HEADER)]  # fmt: skip
    rows = table_rows(result, limit=False)
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in rows]
    lines += ["", "max abs error: |ONNX Runtime - PyTorch fp32|; floor: max |PyTorch fp32 - PyTorch "
              "fp64|, the module's own rounding noise; ratio: max |ONNX Runtime - fp64| / floor (! marks > "
              "the gate's noise_factor); inputs: whether the module's inputs in ONNX were within noise.",
              ]  # fmt: skip
    unaligned = _unaligned(result)
    lines += ["", f"## Not aligned ({len(unaligned)})", ""]
    lines += [f"- `{name}`: {why}" for name, why in unaligned.items()] or ["- none"]
    if result.isolation is not None and not result.isolation.problem:
        lines += ["", "## Replay", "", "`culprit.onnx` (the culprit's subgraph), `culprit_inputs.npz` "
                  "(PyTorch's inputs to it and its fp32/fp64 outputs); reproduce with "
                  "`pytest test_culprit_replay.py`."]  # fmt: skip
    lines += ["", f"debug took {result.seconds:.1f} s, peak RSS {result.peak_rss_mb:.0f} MB"]
    return "\n".join(lines) + "\n"


def plot(result: DebugResult, path: Path) -> Path | None:
    rows = result.verdict.rows
    if not rows:
        return None
    import numpy as np

    depth = np.array([r.depth for r in rows], dtype=float)
    jitter = (np.arange(len(rows)) % 5 - 2) * 0.06  # keep modules at one depth apart
    errors = np.maximum([r.max_abs for r in rows], 1e-12)
    floors = np.maximum([r.floor if r.floor is not None else 1e-12 for r in rows], 1e-12)
    with saved_figure(path, figsize=(8, 4.5)) as (_, axis):
        axis.scatter(depth + jitter, floors, marker="_", s=120, color="#888888", label="fp32 noise floor")
        colors = ["#c44e52" if r.exceeds else "#3b75af" for r in rows]
        axis.scatter(
            depth + jitter, errors, s=18, c=colors, label="|ONNX - PyTorch fp32| (red: over the bound)"
        )
        culprit = result.verdict.culprit
        if culprit is not None:
            index = rows.index(culprit)
            axis.annotate(culprit.module, (depth[index] + jitter[index], errors[index]), fontsize=8)
        axis.set_yscale("log")
        axis.set_xlabel("module depth")
        axis.set_ylabel("max abs error")
        axis.set_title("Error per module against depth")
        axis.legend(fontsize=8)
    return path


REPLAY_TEST = '''"""Replays an onnx-gate debug finding: `{module}` alone disagrees with PyTorch.

Needs only numpy and onnxruntime: `pytest {name}`. It fails while the mismatch exists.
"""

from pathlib import Path

import numpy as np
import onnxruntime as ort

HERE = Path(__file__).resolve().parent
NOISE_FACTOR = {factor!r}


def test_{slug}_matches_pytorch_within_its_fp32_noise():
    data = np.load(HERE / "culprit_inputs.npz")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.{level}
    session = ort.InferenceSession(str(HERE / "culprit.onnx"), options, providers=["CPUExecutionProvider"])
    names = [str(n) for n in data["input_names"]]
    feeds = {{name: data[f"input_{{i}}"] for i, name in enumerate(names)}}
    actual = session.run(None, feeds)[0].astype(np.float64)
    expected32 = data["expected_fp32"].astype(np.float64)
    expected64 = data["expected_fp64"].astype(np.float64)
    floor = np.abs(expected32 - expected64).max()
    error = np.abs(actual - expected64).max()
    slack = 4 * 2.0**-23 * max(np.abs(expected64).max(), np.finfo(np.float32).tiny)
    assert error <= NOISE_FACTOR * floor + slack, (
        f"{module}: ONNX Runtime error {{error:.3g}} vs fp64 is {{error / max(floor, 1e-300):.3g}}x "
        f"PyTorch's own fp32 error {{floor:.3g}} (allowed {{NOISE_FACTOR:g}}x)"
    )
'''


def write_replay(isolation: Isolation, directory: Path, factor: float, level: str) -> list[Path]:
    """culprit.onnx, culprit_inputs.npz and test_culprit_replay.py: the mismatch in a clean checkout."""
    import numpy as np
    import onnx

    if isolation.subgraph is None or isolation.expected32 is None:
        return []
    model_path, data_path, test_path = (
        directory / "culprit.onnx",
        directory / "culprit_inputs.npz",
        directory / "test_culprit_replay.py",
    )
    onnx.save(isolation.subgraph, str(model_path))
    names = list(isolation.feeds)
    expected64 = isolation.expected64 if isolation.expected64 is not None else isolation.expected32
    np.savez(
        data_path, input_names=np.array(names), expected_fp32=isolation.expected32, expected_fp64=expected64,
        **{f"input_{i}": isolation.feeds[name] for i, name in enumerate(names)},
    )  # fmt: skip
    slug = re.sub(r"\W+", "_", isolation.module).strip("_") or "module"
    test_path.write_text(
        REPLAY_TEST.format(
            module=isolation.module, name=test_path.name, factor=factor, slug=slug, level=level
        ),
        encoding="utf-8",
    )
    return [model_path, data_path, test_path]


def write_all(result: DebugResult, directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = [directory / "debug.md"]
    written[0].write_text(markdown(result), encoding="utf-8")
    picture = plot(result, directory / "debug.png")
    if picture:
        written.append(picture)
    if result.isolation is not None:
        level = probe.PRODUCTION if result.fusion_only else probe.UNOPTIMISED
        written += write_replay(result.isolation, directory, result.verdict.factor, level)
    return written
