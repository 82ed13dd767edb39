"""``int8-mixed``: int8 static quantisation with the nodes that cost the task budget most kept in
fp32, chosen by attribution on your samples.

Olive and Neural Compressor search mixed precision by trial over whole configurations. Here each
quantisable node's share of the task error is measured once, by ablation: quantise everything
but that node, and see how much of the budget comes back. Then the costliest nodes are kept in
fp32, one at a time and each time measured again, until the task metric is within
``HEADROOM`` of the budget (the gate then judges the result on the samples as they are *and*
perturbed, so the search leaves room). Ablation needs no alignment between the graph and
PyTorch, so it works for any graph the quantiser takes.

The search's reference is the plain export run by ONNX Runtime in fp32 on the same samples: graph
fidelity and parity hold it to PyTorch fp32 within fp32 noise, far inside any task budget.
Where the graph has more quantisable nodes than ``MAX_ABLATIONS``, consecutive nodes are
measured as groups of about equal size.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from harness.candidates.judge import budget_units, metric_value
from harness.core.model_loader import import_callable
from harness.runtime.runners import ORT_LOG_SEVERITY

if TYPE_CHECKING:
    import numpy as np

    from harness.core.candidate_settings import TaskBudget
    from harness.core.config import GateConfig

QUANTISED_OPS = ("Conv", "MatMul", "Gemm")
MAX_ABLATIONS = 24
HEADROOM = 0.5  # of the budget: the search stops once the samples' worst error is within it


def _session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = ORT_LOG_SEVERITY
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def quantisable_nodes(path: Path) -> list[str]:
    """The names of the nodes the static quantiser turns int8, in graph order."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return [node.name for node in graph.node if node.op_type in QUANTISED_OPS and node.name]


def groups_of(nodes: Sequence[str], most: int = MAX_ABLATIONS) -> list[tuple[str, ...]]:
    """``nodes`` in consecutive groups, at most ``most`` of them, sizes differing by one at most."""
    count = min(len(nodes), most)
    if count == 0:
        return []
    size, extra = divmod(len(nodes), count)
    groups, start = [], 0
    for index in range(count):
        end = start + size + (index < extra)
        groups.append(tuple(nodes[start:end]))
        start = end
    return groups


def search(
    error_with: Callable[[Sequence[str]], float], groups: Sequence[tuple[str, ...]], target: float
) -> dict[str, Any]:
    """The attribution search on ``error_with(kept_in_fp32)`` (budget units): each group's
    contribution by ablation, then the costliest groups kept until the error is within ``target``."""
    everything = error_with(())
    contributions = {group: everything - error_with(group) for group in groups} if everything > target else {}
    kept: list[str] = []
    steps = []
    current = everything
    for group in sorted(contributions, key=lambda g: contributions[g], reverse=True):
        if current <= target:
            break
        kept += group
        current = error_with(kept)
        steps.append({"kept": list(group), "contribution_units": contributions[group], "units_after": current})
    return {
        "units_all_int8": everything, "units": current, "target_units": target, "kept_fp32": kept, "steps": steps,
        "ablations": len(contributions), "within_target": current <= target,
    }  # fmt: skip


def build_int8_mixed(
    source: Path, target: Path, config: GateConfig, feeds: Sequence[Mapping[str, np.ndarray]],
    quantise: Callable[[Path, Path, Sequence[str]], None],
) -> dict[str, Any]:  # fmt: skip
    """Write the mixed-precision artifact to ``target``; returns what the search found (the
    candidate's notes). ``quantise(source, target, nodes_to_exclude)`` is the int8-static builder."""
    budget: TaskBudget | None = config.candidates.budget
    if budget is None:
        raise ValueError("int8-mixed chooses the nodes to keep in fp32 by a task budget: declare [candidates.budget]")
    custom = import_callable(budget.metric, config.search_dirs, what="metric") if ":" in budget.metric else None
    plain = _session(source)
    references = [plain.run([budget.output], dict(f))[0] for f in feeds]

    def worst_units(path: Path) -> float:
        session = _session(path)
        worst = 0.0
        for feed, reference in zip(feeds, references):
            value = metric_value(budget.metric, session.run([budget.output], dict(feed))[0], reference, custom,
                                 higher_is_better=budget.higher_is_better)  # fmt: skip
            worst = max(worst, budget_units(budget, value))
        return worst

    with tempfile.TemporaryDirectory(prefix="onnx-gate-int8-mixed-") as scratch:
        trial = Path(scratch) / "trial.onnx"
        measured: dict[tuple[str, ...], float] = {}

        def error_with(kept: Sequence[str]) -> float:
            key = tuple(sorted(kept))
            if key not in measured:
                quantise(source, trial, list(kept))
                measured[key] = worst_units(trial)
            return measured[key]

        nodes = quantisable_nodes(source)
        found = search(error_with, groups_of(nodes), HEADROOM)
        quantise(source, target, found["kept_fp32"])
    found["quantisable_nodes"] = len(nodes)
    found["trials"] = len(measured)
    if not math.isfinite(found["units"]):
        found["units"] = str(found["units"])
    return found


def describe(notes: Mapping[str, Any]) -> str:
    """One line for summary.md: which nodes stayed fp32 and what each bought."""
    if not notes.get("kept_fp32"):
        return (f"all {notes.get('quantisable_nodes', '?')} quantisable nodes int8: the samples' worst error was "
                f"{notes.get('units_all_int8', 0):.2f} of the budget, within the search's target {notes.get('target_units')}")
    steps = "; ".join(
        f"{', '.join(f'`{n}`' for n in step['kept'])} (its ablation gave back {step['contribution_units']:.2f}, "
        f"{step['units_after']:.2f} after)" for step in notes.get("steps", [])
    )
    units = notes.get("units", 0)
    after = f"{units:.2f}" if isinstance(units, (int, float)) else str(units)
    return (f"kept {len(notes['kept_fp32'])} of {notes.get('quantisable_nodes', '?')} quantisable nodes in fp32, "
            f"worst sample error {notes.get('units_all_int8', 0):.2f} -> {after} of the budget "
            f"({notes.get('trials')} quantisations): {steps}")
