"""The run's reports: gate.json for machines, summary.md for people, a parity error plot."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.bench.baseline import baseline_markdown
from harness.candidates.report import candidates_markdown
from harness.checks.fidelity import summary_lines as fidelity_lines
from harness.checks.rollout import summary_lines as rollout_lines
from harness.checks.module_parity import summary_lines
from harness.checks.parity_stats import case_to_dict, describe_exact
from harness.core.failure_budget import describe
from harness.core.latest import point_latest
from harness.core.plots import saved_figure
from harness.core.timing import breakdown_markdown
from harness.gate.divergence import summary_section
from harness.report.bench import latency_markdown, plot_latency

if TYPE_CHECKING:
    from harness.core.timing import Stopwatch
    from harness.report.outcome import GateOutcome

ORIGINAL_MAE_CLAIM = 1e-5


def _spared_sentence(spared: int) -> str:
    if not spared:
        return "."
    return (f", {spared} of which ran without it: ONNX Runtime and PyTorch fp32 agreed there so closely that "
            "no float64 run could change the verdict or add a finding (docs/verdicts.md).")


def gate_document(outcome: GateOutcome) -> dict[str, Any]:
    verdict = outcome.verdict
    document = {
        "run_id": outcome.run_id,
        "verdict": "passed" if verdict else "failed",
        "reasons": list(verdict.reasons),
        "required_checks": list(outcome.required_checks),
        "checks": dict(outcome.checks),
        "artifact": {**outcome.artifact.to_dict(), "cache": outcome.artifact_cache} if outcome.artifact else None,
        "artifact_error": outcome.artifact_error,
        "parity": dict(outcome.parity),
        "parity_failures": list(outcome.parity_failures),
        "parity_failure_case": case_to_dict(outcome.parity_failure_case),
        "hypothesis_profile": outcome.hypothesis_profile,
        "config": dict(outcome.config),
        "machine": dict(outcome.machine),
        "duration_s": round(time.time() - outcome.started, 2),
    }
    optional = {"execution": outcome.execution, "baseline": outcome.baseline, "divergence": outcome.divergence,
                "publish": outcome.publish.to_dict() if outcome.publish is not None else None}
    document |= {key: value for key, value in optional.items() if value is not None}
    if outcome.benchmarks is not None:
        document["benchmarks"] = outcome.benchmarks
    if outcome.candidates is not None:
        document["candidates"] = outcome.candidates
    return document


def fp64_unavailable_finding(reason: str) -> str:
    """The one line that says the float64 reference could not run, for summary.md and the terminal."""
    return (
        f"FINDING | the model cannot run in float64 ({reason}): the noise-floor check is off and parity "
        "used the fixed atol/rtol/mae bound only, which cannot tell an export as accurate as PyTorch "
        "from one a few times less accurate."
    )


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def summary_markdown(document: dict[str, Any]) -> str:
    verdict = document["verdict"].upper()
    lines = [f"# onnx-gate {document['run_id']}: {verdict}", ""]
    if document["reasons"]:
        lines += [f"- {reason}" for reason in document["reasons"]] + [""]
    lines += ["## Checks", "", "| check | required | status | tests |", "| --- | --- | --- | --- |"]
    for name, record in document["checks"].items():
        required = "yes" if name in document["required_checks"] else "no"
        lines.append(f"| {name} | {required} | {record['status']} | {len(record['tests'])} |")
    messages = [m for record in document["checks"].values() for m in record["messages"]]
    if messages:
        lines += ["", "Messages:", ""] + [f"- `{m}`" for m in messages[:20]]
    parity = document["parity"]
    lines += [
        "", "## Parity: ONNX Runtime CPU vs PyTorch eager CPU (fp32)", "",
        f"{parity['examples']} Hypothesis examples (profile `{document['hypothesis_profile']}`): "
        f"{parity.get('examples_in_range', 0)} with every input inside its declared range, "
        f"{parity.get('examples_out_of_range', 0)} outside it (stress inputs); "
        f"{parity.get('examples_from_samples', 0)} drawn from the configured samples. "
        f"The original design's criterion: MAE < {ORIGINAL_MAE_CLAIM:g}.", "",
        "| output | examples | max abs error | mean abs error | tolerance | noise floor (max) "
        "| ONNX vs fp64 (max) | worst noise ratio |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]  # fmt: skip
    exact: list[str] = []
    for name, stats in parity["outputs"].items():
        if "compared_exactly" in stats:
            exact.append(f"- `{name}` ({stats['examples']} examples): "
                         + describe_exact(stats["compared_exactly"], stats["values_differing"]) + ".")
            continue
        tol = parity["tolerance"][name]
        bound = f"atol {tol['atol']:g}, rtol {tol['rtol']:g}, mae < {tol['mae']:g}"
        if tol["noise_factor"]:
            bound += f", <= {tol['noise_factor']:g}x noise"
        lines.append(
            f"| {name} | {stats['examples']} | {_fmt(stats.get('max_abs', '-'))} | "
            f"{_fmt(stats.get('mean_abs', '-'))} | {bound} | {_fmt(stats.get('noise_floor_max', '-'))} | "
            f"{_fmt(stats.get('onnx_vs_fp64_max', '-'))} | {_fmt(stats.get('noise_ratio_worst', '-'))} |"
        )
    padded = {name: stats for name, stats in parity["outputs"].items() if stats.get("values_left_out_as_padding")}
    if padded:
        lines += ["", "Padded positions (`padded_outputs`) left out of the comparison: " + ", ".join(
            f"{name} {stats['values_left_out_as_padding']} of "
            f"{stats['values_left_out_as_padding'] + stats.get('values_compared', 0)} values"
            for name, stats in padded.items()
        ) + "."]
    lines += [
        "",
        "The noise floor is PyTorch fp32's own deviation from a float64 run of the same model on the "
        "same inputs; the noise ratio is ONNX Runtime's deviation from float64 in units of it. "
        f"fp64 reference cost: {parity['fp64_reference_seconds']} s for {parity['examples']} examples"
        + _spared_sentence(parity.get("fp64_spared_examples", 0)),
    ]
    if exact:
        lines += ["", "Integer and bool outputs, compared exactly:", "", *exact]
    if parity.get("systematic_error"):
        lines += ["", "Systematic error (mean signed error over a fixed sample, one case per input family "
                  "and pinned batch size):", "", *[f"- `{line}`" for line in parity["systematic_error"]]]
    if parity.get("after_first_failure"):
        lines += ["", "After its first failure a parity test runs at most half its profile's examples more, "
                  "shrinking the failing case (examples past that are not run):", "",
                  *[f"- {describe(entry)}" for entry in parity["after_first_failure"]]]
    if parity.get("fidelity"):
        lines += ["", "## Graph fidelity (the graph in float64 against PyTorch in float64)", "", *fidelity_lines(parity["fidelity"])]
    if parity.get("rollout"):
        lines += ["", "## Rollout parity (state fed back, call after call)", "", *rollout_lines(parity["rollout"])]
    if parity.get("module_parity"):
        lines += ["", "## Module-level parity", "", *summary_lines(parity["module_parity"])]
    if parity.get("findings") or parity.get("fp64_unavailable"):
        lines += ["", "## Findings about the model and the runtime", ""]
    if parity.get("fp64_unavailable"):
        lines += [f"- {fp64_unavailable_finding(parity['fp64_unavailable'])}", ""]
    if parity.get("findings"):
        lines += ["PyTorch fp32 itself is far from float64 (unstable), or yields NaN/Inf, on these inputs, "
                  "or the outputs do not depend on an input (ignored_input); or the inputs are degenerate "
                  "(constant) and PyTorch is exact by luck, where ONNX Runtime is less accurate yet within "
                  "atol/rtol (degenerate); or, where graph fidelity shows the graph is the model, ONNX "
                  "Runtime's fp32 kernels are less accurate than PyTorch's within atol/rtol or within its "
                  "noise (runtime, naming the operator). "
                  "That is a property of the model or the runtime, not of the export; a finding blocks only where the "
                  "config says so (`block_on_unstable`, `allow_non_finite` under `[tool.onnx-gate.tolerance]`, "
                  "`block_on_ignored_inputs`).", "",
                  "| kind | output | examples (in range / outside) | blocks | worst case |",
                  "| --- | --- | --- | --- | --- |"]  # fmt: skip
        for finding in parity["findings"]:
            lines.append(
                f"| {finding['kind']} | {finding['output']} | {finding['examples']} "
                f"({finding['examples_in_range']} / {finding['examples_out_of_range']}) | "
                f"{'yes' if finding['blocking'] else 'no'} | `{finding['worst']}` |"
            )
    if document.get("divergence"):
        lines += ["", summary_section(document["divergence"], document["run_id"])]
    for section in document.get("sections_markdown", []):
        lines += ["", section]
    if document.get("timing"):
        lines += ["", breakdown_markdown(document["timing"])]
    if document.get("publish_markdown"):
        lines += ["", *document["publish_markdown"]]
    artifact = document["artifact"]
    lines += ["", "## Artifact", ""]
    if artifact:
        lines += [
            _files_line(artifact),
            f"- sha256 (identity): `{artifact['sha256']}`",
            f"- made by: {artifact['origin']} ({artifact['producer']}), opset {artifact['opset']}, "
            f"export {artifact['export_seconds']} s",
            "- versions: " + ", ".join(f"{k} {v}" for k, v in artifact["versions"].items()),
            _absolute_paths_line(artifact.get("absolute_paths", 0)),
        ]
        if artifact.get("cache"):
            cache = artifact["cache"]
            lines.append(f"- from the export cache: {'yes' if cache['from_cache'] else 'no'} ({cache['status']}"
                         + (f", key `{cache['key']}`" if cache["key"] else "")
                         + (f"; {cache['reason']}" if cache["reason"] else "") + ")")
    else:
        lines.append(f"- invalid: {document['artifact_error']}")
    config = document["config"]
    lines += [
        "", "## Configuration", "",
        f"- model: `{config['model']}` {config['model_kwargs'] or ''}",
        f"- exporter: {config['exporter']}, opset {config['opset']}",
        "- from: " + "; ".join(config["sources"]),
        f"- duration: {document['duration_s']} s",
    ]  # fmt: skip
    if document.get("execution"):
        lines.append(_execution_line(document["execution"]))
    return "\n".join(lines) + "\n"


def _execution_line(execution: dict[str, Any]) -> str:
    exports = f"exported {execution['exports']} time(s)" if execution["exports"] else "given, not exported"
    if not execution["workers"]:
        lanes = execution.get("threads_per_lane")
        beside = f"; parity ran ONNX Runtime beside PyTorch, {lanes} thread(s) each" if lanes else ""
        return f"- execution: one process, {execution['threads_per_worker']} threads{beside}; {exports}"
    per_worker = ", ".join(f"{w} {n}" for w, n in execution.get("parity_examples_per_worker", {}).items())
    return (f"- execution: {execution['workers']} pytest-xdist workers x {execution['threads_per_worker']} "
            f"threads; {exports}, by the controller; parity examples per worker: {per_worker or '-'}")


def _files_line(artifact: dict[str, Any]) -> str:
    """One file, or the graph and its external data files: the identity covers them all."""
    name = Path(artifact["path"]).name
    data = [f for f in artifact.get("files", ()) if f["role"] == "data"]
    line = f"- file: `{name}`, {artifact['size_bytes'] / 1e6:.1f} MB"
    if data:
        line += (f" with {len(data)} external data file(s) ({', '.join(f['name'] for f in data[:3])}"
                 f"{', ...' if len(data) > 3 else ''}); the identity is the sha256 of their manifest")
    if artifact.get("inlined_data_files"):
        line += f"; {artifact['inlined_data_files']} external data file(s) of the given model inlined, to ship one file"
    return line


def _absolute_paths_line(count: int) -> str:
    if not count:
        return "- absolute paths: none (the bytes do not depend on the folder it was built in)"
    # Only the count: the paths themselves would leak the build machine's layout into the report.
    return (f"- absolute paths: **{count}** in doc strings and metadata; they reveal the build machine's "
            "folder layout and make the sha256 differ per folder. Export with onnx-gate to drop them.")


def plot_parity(outcome: GateOutcome, path: Path) -> Path | None:
    """Histogram of per-example max abs error per output, on a log axis."""
    series = outcome.parity_errors
    if not series:
        return None

    tolerance = outcome.parity["tolerance"]
    # One histogram per output, 5 x 3.5 in each: the labels' room is known (saved_figure).
    margins = {"left": 0.7 / (5 * len(series)), "right": 1 - 0.2 / (5 * len(series)), "bottom": 0.15, "top": 0.9, "wspace": 0.3}
    with saved_figure(
        path, nrows=1, ncols=len(series), figsize=(5 * len(series), 3.5), squeeze=False, margins=margins
    ) as (_, axes):
        for axis, (name, values) in zip(axes[0], series.items()):
            _plot_errors(axis, name, values, tolerance[name]["atol"])
    return path


def _plot_errors(axis: Any, name: str, values: tuple[float, ...], atol: float) -> None:
    import numpy as np

    data = np.maximum(np.asarray(values, dtype=float), 1e-12)  # log axis: exact zeros at the floor
    data = data[np.isfinite(data)]
    if data.size:
        bins = np.logspace(np.log10(data.min()), np.log10(max(data.max(), data.min() * 10)), 30)
        axis.hist(data, bins=bins, color="#3b75af")
    axis.set_xscale("log")
    axis.axvline(atol, color="#c44e52", linestyle="--", label=f"atol {atol:g}")
    axis.set_title(f"{name}: max |ORT - PyTorch| per example")
    axis.set_xlabel("max abs error")
    axis.set_ylabel("examples")
    axis.legend()


def write_reports(outcome: GateOutcome, timing: Stopwatch, *, plots: bool = True) -> dict[str, Any]:
    """Write gate.json, summary.md and the plots into the run's report folder."""
    directory = outcome.report_dir
    directory.mkdir(parents=True, exist_ok=True)
    document = gate_document(outcome)
    sections = []
    if outcome.benchmarks is not None:
        if plots:
            plot_latency(outcome.benchmarks, directory / "latency.png")
        sections.append(latency_markdown(outcome.benchmarks))
    if outcome.baseline is not None:
        sections.append(baseline_markdown(outcome.baseline))
    if outcome.candidates is not None:
        sections.append(candidates_markdown(outcome.candidates))
    document["sections_markdown"] = sections
    if outcome.publish is not None:
        document["publish_markdown"] = outcome.publish.markdown()
    if plots:
        plot_parity(outcome, directory / "parity.png")
    # Last, so that it counts the plots above (the files below take milliseconds).
    document["timing"] = timing.breakdown()
    _write_atomic(directory / "summary.md", summary_markdown(document))
    document.pop("sections_markdown", None)
    document.pop("publish_markdown", None)
    document["files"] = sorted({p.name for p in directory.iterdir()} | {"gate.json", "summary.md"})
    _write_atomic(directory / "gate.json", json.dumps(document, indent=2, sort_keys=False, default=str))
    point_latest(directory)
    return document


def _write_atomic(path: Path, text: str) -> None:
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)
