"""The gate passes correct exports: both exporters, two inputs, a dynamic non-batch axis."""

import pytest

from tests.conftest import FRAME_NET, SMALL_LOCALIZATION_NET, TWO_INPUT_NET


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
@pytest.mark.parametrize(
    "template", [SMALL_LOCALIZATION_NET, TWO_INPUT_NET, FRAME_NET], ids=["localization-net", "two-inputs", "time-axis"]
)
def test_it_passes_a_correct_export(project, template, exporter):
    project.write_config(template, exporter=exporter)
    run = project.run()
    assert run.result.ret == 0, run.result.stdout.str()
    assert run.document["verdict"] == "passed"
    assert all(run.status(check) == "passed" for check in run.document["required_checks"])
    assert run.document["parity"]["examples"] > 0
    run.result.stdout.fnmatch_lines(["*PASSED | every required check ran and passed*"])


def test_it_runs_every_symbolic_dimension_at_three_sizes_besides_the_trace_size(project):
    project.write_config(FRAME_NET)
    run = project.run("-v")
    dynamic = run.document["checks"]["dynamic_dims"]["tests"]
    for dim in ("batch", "time"):
        sizes = {nodeid.split(f"{dim}=")[1].split("-")[0] for nodeid in dynamic if f"[{dim}=" in nodeid or f"-{dim}=" in nodeid}
        assert len(sizes) >= 3, (dim, dynamic)
    assert "2" not in {n.split("batch=")[1].split("-")[0] for n in dynamic if "batch=" in n}


def test_it_writes_the_reports(project):
    project.write_config()
    run = project.run()
    folder = project.path / "reports" / run.document["run_id"]
    assert {"gate.json", "summary.md", "junit.xml", "parity.png"} <= {p.name for p in folder.iterdir()}
    summary = (folder / "summary.md").read_text()
    assert "PASSED" in summary.splitlines()[0]
    assert "| positions |" in summary and "| uncertainties |" in summary
    assert run.document["parity"]["module_parity"]["status"] == "passed"
    assert "## Module-level parity" in summary and "`PASSED | every aligned module's float64 graph value within its fidelity bound" in summary
    assert run.document["artifact"]["sha256"] and run.document["artifact"]["size_bytes"] > 0
    assert set(run.document["artifact"]["versions"]) == {"torch", "onnx", "onnxruntime"}
    assert (folder / "parity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (project.path / "reports" / "latest").resolve() == folder.resolve()
    # Graph fidelity judges this graph, so a case on which ONNX Runtime and PyTorch fp32 agree too
    # closely for float64 to matter spares its float64 run; about one in 8 runs it anyway.
    parity = run.document["parity"]
    assert 0 < parity["fp64_spared_examples"] <= parity["examples"], parity["fp64_spared_examples"]
    against_float64 = parity["outputs"]["positions"].get("examples_against_float64", 0)
    assert against_float64 == parity["examples"] - parity["fp64_spared_examples"]
    assert f"{parity['fp64_spared_examples']} of which ran without it" in summary
