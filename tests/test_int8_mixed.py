"""The int8-mixed attribution search (harness/candidates/mixed.py) as logic: ablation per group,
then the costliest groups kept in fp32 until the task error is within the target."""

from __future__ import annotations

import pytest

from harness.candidates.mixed import describe, groups_of, search
from harness.core import candidate_settings
from harness.core.errors import ConfigError


def _error_model(costs: dict[str, float], base: float = 0.05):
    """Budget units as the sum of each still-quantised node's cost: what ablation measures."""
    calls: list[tuple[str, ...]] = []

    def error_with(kept):
        calls.append(tuple(kept))
        return base + sum(cost for node, cost in costs.items() if node not in kept)

    return error_with, calls


def test_the_costliest_nodes_are_kept_until_the_error_is_within_the_target():
    costs = {"conv1": 0.9, "conv2": 0.05, "conv3": 0.6, "dense": 0.1}
    error_with, _ = _error_model(costs)
    found = search(error_with, [(n,) for n in costs], target=0.5)
    assert found["units_all_int8"] == pytest.approx(1.70)
    assert found["kept_fp32"] == ["conv1", "conv3"]  # 1.70 -> 0.80 -> 0.20
    assert found["units"] == pytest.approx(0.20) and found["within_target"]
    assert [step["kept"] for step in found["steps"]] == [["conv1"], ["conv3"]]
    assert found["steps"][0]["contribution_units"] == pytest.approx(0.9)
    assert "kept 2 of" in describe({**found, "quantisable_nodes": 4, "trials": 7})


def test_nothing_is_kept_and_nothing_ablated_when_all_int8_already_holds():
    error_with, calls = _error_model({"conv1": 0.1, "conv2": 0.1})
    found = search(error_with, [("conv1",), ("conv2",)], target=0.5)
    assert found["kept_fp32"] == [] and found["ablations"] == 0 and calls == [()]
    assert describe({**found, "quantisable_nodes": 2}).startswith("all 2 quantisable nodes int8")


def test_a_target_no_choice_reaches_is_said_not_hidden():
    error_with, _ = _error_model({"conv1": 0.3}, base=0.9)  # fp32 everywhere still misses
    found = search(error_with, [("conv1",)], target=0.5)
    assert found["kept_fp32"] == ["conv1"] and not found["within_target"] and found["units"] == pytest.approx(0.9)


def test_many_nodes_are_measured_in_consecutive_groups_of_about_equal_size():
    nodes = [f"n{i}" for i in range(50)]
    groups = groups_of(nodes, most=24)
    assert len(groups) == 24 and [n for g in groups for n in g] == nodes
    assert {len(g) for g in groups} == {2, 3}
    assert groups_of(nodes[:5], most=24) == [(n,) for n in nodes[:5]] and groups_of([]) == []


def test_int8_mixed_without_a_task_budget_is_refused_in_one_line():
    with pytest.raises(ConfigError, match="int8-mixed.*declare candidates.budget"):
        candidate_settings.parse_candidates({"build": ["int8-mixed"]}, ("y",))


@pytest.mark.checks
def test_int8_mixed_builds_an_artifact_whose_kept_nodes_stay_fp32(tmp_path):
    """The builder on a real export: the search runs the quantiser with nodes excluded, and the
    nodes it kept have no int8 weights in the written artifact."""
    import tomllib

    import onnx

    from harness.candidates.build import build_candidate
    from harness.core import config as gate_config
    from harness.gate.session import GateSession
    from tests.conftest import HERE, SMALL_LOCALIZATION_NET

    section = tomllib.loads(SMALL_LOCALIZATION_NET % {"exporter": "torchscript"})
    # A budget far tighter than int8 allows: every node the search can keep, it keeps.
    section["candidates"] = {"build": ["int8-mixed"], "budget": {"metric": "max_abs", "output": "positions", "limit": 1e-9}}
    config = gate_config.parse(section, tmp_path, search_dirs=(HERE,))
    session = GateSession(config, work_dir=tmp_path / "work")
    session.prepare()
    assert session.artifact is not None, session.artifact_error
    candidate = build_candidate("int8-mixed", session.artifact.path, tmp_path / "candidates", config, {"calibration_samples": 2})
    assert candidate.built, candidate.error
    notes = candidate.notes
    assert notes["quantisable_nodes"] > 0 and notes["kept_fp32"] and not notes["within_target"]
    assert notes["trials"] >= 1 + notes["ablations"]  # everything int8, then one ablation per group
    graph = onnx.load(str(candidate.path)).graph
    dequantised = {node.output[0] for node in graph.node if node.op_type == "DequantizeLinear"}
    for node in graph.node:
        if node.name in notes["kept_fp32"]:
            assert not any(value in dequantised for value in node.input[1:2]), f"{node.name} reads an int8 weight"
    assert "DequantizeLinear" in {node.op_type for node in graph.node} or len(notes["kept_fp32"]) == notes["quantisable_nodes"]
