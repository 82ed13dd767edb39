"""Under pytest-xdist the gate is still one gate: one export, one verdict, one report, one publish."""

from __future__ import annotations

import pytest

from tests import defects
from tests.conftest import BENCHMARKS, CONFORMANCE, TWO_INPUT_NET

FRESH_EXPORT_CACHE = True  # each test exports for itself (tests/conftest.py)

pytest.importorskip("xdist")

# Written into the user's project and loaded with -p: it changes the exported file after the
# controller checked it and before the workers start, as a concurrent writer would.
TAMPER_PLUGIN = """
import pytest

from harness.plugin.api_request import GATE_KEY


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    with open(node.config.stash[GATE_KEY].artifact.path, "ab") as handle:
        handle.write(b"tampered")
"""

# Counts calls of the publish step, per process kind, in the file named by PUBLISH_LOG.
PUBLISH_COUNTER_PLUGIN = """
import os

import harness.publish.flow as flow


def pytest_configure(config):
    original = flow.publish_gate

    def counted(*args, **kwargs):
        with open(os.environ["PUBLISH_LOG"], "a") as log:
            log.write(("worker" if hasattr(config, "workerinput") else "controller") + "\\n")
        return original(*args, **kwargs)

    flow.publish_gate = counted
"""


def _exported_files(project):
    return sorted(project.path.rglob("model.onnx"))


def _assert_same_parity(distributed, single):
    """Equal up to summation order (the mean of per-example errors); the fp64 cost is a timing."""
    plain = ("examples", "examples_in_range", "examples_out_of_range", "findings", "tolerance", "fp64_unavailable")
    assert {k: distributed[k] for k in plain} == {k: single[k] for k in plain}
    assert distributed["outputs"].keys() == single["outputs"].keys()
    for name, stats in distributed["outputs"].items():
        assert stats == pytest.approx(single["outputs"][name], rel=1e-9), name


def test_two_workers_give_the_same_gate_as_one_process_from_one_export(project):
    project.write_config(TWO_INPUT_NET)
    single = project.run(subprocess=True)
    assert single.result.ret == 0, single.result.stdout.str()
    assert len(_exported_files(project)) == 1
    distributed = project.run("-n", "2", subprocess=True)
    assert distributed.result.ret == 0, distributed.result.stdout.str()

    assert len(_exported_files(project)) == 2  # one more file: the controller's, none per worker
    execution = distributed.document["execution"]
    assert execution["workers"] == 2 and execution["exports"] == 1 and execution["threads_per_worker"] >= 1
    reports = [p for p in (project.path / "reports").glob("*/gate.json") if not p.parent.is_symlink()]
    assert len(reports) == 2  # one report per session, none per worker
    assert distributed.document["verdict"] == single.document["verdict"] == "passed"
    assert {n: r["status"] for n, r in distributed.document["checks"].items()} == {
        n: r["status"] for n, r in single.document["checks"].items()
    }
    assert {n: set(r["tests"]) for n, r in distributed.document["checks"].items()} == {
        n: set(r["tests"]) for n, r in single.document["checks"].items()
    }
    # Derandomized Hypothesis: the same examples, so the same numbers (up to summation order).
    _assert_same_parity(distributed.document["parity"], single.document["parity"])
    per_worker = execution["parity_examples_per_worker"]
    assert set(per_worker) == {"gw0", "gw1"}
    assert sum(per_worker.values()) == distributed.document["parity"]["examples"] > 0
    summary = (project.path / "reports" / distributed.document["run_id"] / "summary.md").read_text()
    assert "2 pytest-xdist workers" in summary and "exported 1 time(s), by the controller" in summary


def test_a_perturbed_weight_blocks_under_two_workers_and_names_parity(project, tmp_path):
    project.write_config()
    perturbed = defects.perturb_one_weight(defects.export(tmp_path / "good.onnx"), tmp_path / "perturbed.onnx")
    run = project.run("-n", "2", "--gate-onnx", str(perturbed), subprocess=True)
    assert run.result.ret == 1
    assert run.document["verdict"] == "failed" and "parity failed" in run.document["reasons"]
    assert run.status("parity") == "failed" and run.status("contract") == "passed"
    assert run.document["execution"]["exports"] == 0 and _exported_files(project) == []
    # The failing case travelled from a worker, so `onnx-gate debug` can rebuild it.
    assert run.document["parity_failure_case"]["family"]
    assert run.document["parity_failures"]
    run.result.stdout.fnmatch_lines(["*FAILED | *parity failed*"])


def test_a_changed_file_fails_the_artifact_check_and_only_the_controller_refuses_to_publish(project, monkeypatch):
    project.write_config(TWO_INPUT_NET, extra='\n[publish]\nmodel_name = "xdist-two-input"\n')
    (project.path / "tamper.py").write_text(TAMPER_PLUGIN)
    (project.path / "publish_counter.py").write_text(PUBLISH_COUNTER_PLUGIN)
    log = project.path / "publish.log"
    monkeypatch.setenv("PUBLISH_LOG", str(log))
    run = project.run(
        "-n", "2", "-p", "tamper", "-p", "publish_counter", "--gate-publish", "--gate-bench-quick",
        "-k", "not determinism", paths=(CONFORMANCE, BENCHMARKS), subprocess=True,
    )  # fmt: skip
    assert run.result.ret == 1, run.result.stdout.str()
    # The workers hash the file again: it is not the one the controller checked.
    assert run.status("artifact") == "failed"
    message = " ".join(run.document["checks"]["artifact"]["messages"])
    assert "changed after the controller checked it" in message and "sha256" in message
    assert run.status("parity") == "skipped"  # nothing ran on a file that is not the checked one
    # Benchmarks never share the CPU with parity: they skip, saying why, and so block the release.
    assert run.status("latency_cpu") == "skipped"
    assert "benchmarks do not run under pytest-xdist" in " ".join(run.document["checks"]["latency_cpu"]["messages"])
    assert {"artifact failed", "latency_cpu skipped", "determinism not run"} <= set(run.document["reasons"])
    # One refusal, from the controller; no worker reached the publish step.
    publish = run.document["publish"]
    assert publish["status"] == "refused"
    assert "latency_cpu (skipped)" in publish["reason"] and "determinism (not run)" in publish["reason"]
    assert log.read_text().split() == ["controller"]
