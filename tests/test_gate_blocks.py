"""The gate blocks defective exports, and the check that catches each one is the right one."""

import pytest

from tests import defects


@pytest.fixture
def good_onnx(tmp_path):
    return defects.export(tmp_path / "good.onnx")


def _run_on(project, onnx_path, checks):
    """A gate on ``onnx_path`` narrowed to the checks the test asserts (``-k``): the others would
    report "not run", which the assertions on the named checks do not read."""
    project.write_config()
    run = project.run("--gate-onnx", str(onnx_path), "-k", checks)
    assert run.result.ret != 0
    assert run.document["verdict"] == "failed"
    return run


def test_it_validates_a_given_correct_onnx_file(project, good_onnx, tmp_path):
    """A file made elsewhere, its node names and metadata stripped by post-processing: module-level
    parity cannot tie its values to modules, says so in one line, and the gate passes."""
    project.write_config()
    run = project.run("--gate-onnx", str(defects.strip_scopes(good_onnx, tmp_path / "stripped.onnx")))
    assert run.result.ret == 0, run.result.stdout.str()
    assert run.document["artifact"]["origin"] == "given"
    assert run.status("module_parity") == "skipped" and "module_parity" not in run.document["required_checks"]
    summary = (project.path / "reports" / run.document["run_id"] / "summary.md").read_text()
    assert "`NOT JUDGED | module-level parity: the ONNX file carries no scope information" in summary


def test_it_blocks_an_export_made_in_training_mode(project, tmp_path):
    run = _run_on(project, defects.export(tmp_path / "train.onnx", training=True), "contract")
    assert run.status("contract") == "failed"
    assert "training mode" in " ".join(run.document["checks"]["contract"]["messages"])


def test_it_blocks_a_static_batch_dimension(project, tmp_path):
    run = _run_on(project, defects.export(tmp_path / "static.onnx", dynamic=False), "contract or dynamic_dims")
    assert run.status("contract") == "failed"
    assert "fixed to 2" in " ".join(run.document["checks"]["contract"]["messages"])
    assert run.status("dynamic_dims") == "failed"


def test_it_blocks_swapped_output_names(project, tmp_path):
    run = _run_on(project, defects.export(tmp_path / "swapped.onnx", output_names=defects.OUTPUTS[::-1]), "contract or test_parity")
    assert run.status("contract") == "failed"
    assert run.status("parity") == "failed"


def test_it_blocks_one_weight_perturbed_by_1e_3_in_the_onnx_only(project, good_onnx, tmp_path):
    run = _run_on(project, defects.perturb_one_weight(good_onnx, tmp_path / "perturbed.onnx"), "contract or test_parity")
    assert run.failed_checks() >= {"parity"}
    assert run.status("contract") == "passed"


def test_it_blocks_weights_rounded_through_fp16(project, good_onnx, tmp_path):
    run = _run_on(project, defects.round_weights_through_fp16(good_onnx, tmp_path / "fp16.onnx"), "contract or test_parity")
    assert "parity" in run.failed_checks()
    assert run.status("contract") == "passed"
    # The terminal names the case; the report adds the worst element with its absolute and relative error.
    run.result.stdout.fnmatch_lines(["  parity: *FAILED | onnxruntime-cpu vs torch-cpu-float32 on * inputs (batch=*, seed=*)*"])
    run.details_match([
        "*FAILED | onnxruntime-cpu vs torch-cpu-float32 on * inputs (batch=*, seed=*)*",
        "*worst at (*): * vs reference * (abs error *, rel error *)*",
    ])  # fmt: skip


def test_it_blocks_a_truncated_file_without_crashing(project, good_onnx, tmp_path):
    run = _run_on(project, defects.truncate(good_onnx, tmp_path / "truncated.onnx"), "artifact")
    assert run.status("artifact") == "failed"
    assert run.result.ret == 1  # a failed gate, not an internal error or a usage error
    outcomes = run.result.parseoutcomes()
    assert outcomes.get("failed") == 1 and "error" not in outcomes
    run.result.stdout.fnmatch_lines(["*not a readable ONNX model*"])


def test_it_blocks_a_graph_containing_a_random_op(project, good_onnx, tmp_path):
    run = _run_on(project, defects.add_random_op(good_onnx, tmp_path / "random.onnx"), "contract")
    assert run.status("contract") == "failed"
    assert "RandomUniformLike" in " ".join(run.document["checks"]["contract"]["messages"])


def test_a_blocked_gate_prints_one_line_per_failed_check_and_the_details_in_the_report(project, tmp_path):
    run = _run_on(project, defects.export(tmp_path / "static.onnx", dynamic=False), "contract or dynamic_dims")
    output = run.result.stdout.str()
    assert "Traceback" not in output and "= FAILURES =" not in output and "= ERRORS =" not in output
    section = output.split("= onnx-gate =", 1)[1].splitlines()[1:]
    details_at = next(i for i, line in enumerate(section) if line.startswith("details: "))
    assert section[0].startswith("FAILED | ")
    assert sorted(line.split(":")[0].strip() for line in section[1:details_at]) == sorted(run.failed_checks())
    assert section[details_at].endswith("failures.txt; -v or --tb=short shows them here")
    run.details_match(["*test_contract.py::*", "*fixed to 2*"])
    assert "failures.txt" in run.document["files"]


def test_verbose_or_an_explicit_tb_restores_the_tracebacks(project, tmp_path):
    static = defects.export(tmp_path / "static.onnx", dynamic=False)
    project.write_config()
    for option in ("-v", "--tb=short"):
        run = project.run("--gate-onnx", str(static), option, "-k", "contract")
        assert run.result.ret == 1
        run.result.stdout.fnmatch_lines(["*= FAILURES =*", "*fixed to 2*"])


def test_on_two_lanes_parity_passes_a_correct_file_and_blocks_a_perturbed_weight(project, good_onnx, tmp_path, monkeypatch):
    """With two cores parity runs ONNX Runtime beside PyTorch (harness/runtime/lanes.py). `make
    test` gives each gate one core's share, so this test gives it two: the verdicts are the ones
    the gate reaches one call after the other."""
    from harness.runtime import runners

    monkeypatch.setattr(runners, "_THREADS_OVERRIDE", 2)
    project.write_config()
    run = project.run("--gate-onnx", str(good_onnx), "-k", "test_parity or batch_consistency")
    assert run.document["execution"]["threads_per_lane"] == 1
    assert run.status("parity") == "passed" and run.status("batch_consistency") == "passed", run.result.stdout.str()
    blocked = _run_on(project, defects.perturb_one_weight(good_onnx, tmp_path / "perturbed.onnx"), "test_parity")
    assert blocked.document["execution"]["threads_per_lane"] == 1 and "parity" in blocked.failed_checks()
