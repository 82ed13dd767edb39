"""End to end: what the gate concludes about models that yield NaN, name their outputs, nest them,
or saturate far outside their range. Each ran the gate to a wrong verdict or a crash before."""

from __future__ import annotations

import onnx
import pytest
import torch

from tests.user_models import saturating_net

SMALL_VECTOR_MODEL = """
model = "user_models:%(model)s"
exporter = "%(exporter)s"
outputs = %(outputs)s
report_dir = "reports"

[[inputs]]
name = "x"
shape = ["batch", 4]
range = [%(low)s, 1.0]
dims = { batch = [1, 4] }
"""


def _config(project, model, *, outputs='["y"]', exporter="torchscript", low="-1.0", extra=""):
    values = {"model": model, "outputs": outputs, "exporter": "%(exporter)s", "low": low}
    project.write_config(SMALL_VECTOR_MODEL % values, exporter=exporter, extra=extra)


def test_nan_from_the_model_itself_blocks_with_a_finding_and_every_report_written(project):
    _config(project, "log_net")
    run = project.run()
    assert run.result.ret == 1, run.result.stdout.str()
    assert "INTERNALERROR" not in run.result.stdout.str() + run.result.stderr.str()
    assert run.status("parity") == "failed"
    [finding] = run.document["parity"]["findings"]
    assert finding["kind"] == "non_finite" and finding["blocking"]
    summary = (project.path / "reports" / run.document["run_id"] / "summary.md").read_text()
    assert "## Findings about the model" in summary and "PyTorch itself produces NaN/Inf" in summary
    run.result.stdout.fnmatch_lines(["*FAILED | *parity failed*"])


def test_nan_from_the_model_still_blocks_with_the_noise_floor_off(project):
    _config(project, "log_net", extra="\n[tolerance]\nnoise_factor = 0\n")
    run = project.run()
    assert run.result.ret == 1 and run.status("parity") == "failed"


def test_nan_from_the_model_passes_when_the_config_allows_it(project):
    _config(project, "log_net", extra="\n[tolerance]\nallow_non_finite = true\n")
    run = project.run()
    assert run.result.ret == 0, run.result.stdout.str()
    [finding] = run.document["parity"]["findings"]
    assert finding["kind"] == "non_finite" and not finding["blocking"]


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_dict_outputs_are_matched_by_name_not_by_position(project, exporter):
    _config(project, "dict_net", outputs='["a", "b"]', exporter=exporter)
    run = project.run()
    assert run.result.ret == 0, run.result.stdout.str()
    model = onnx.load(run.document["artifact"]["path"])
    widths = {o.name: o.type.tensor_type.shape.dim[1].dim_value for o in model.graph.output}
    assert widths == {"a": 2, "b": 3}


def test_an_onnx_file_whose_outputs_follow_the_dicts_order_is_blocked(project, tmp_path):
    from tests.user_models import dict_net

    class Positional(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = dict_net()

        def forward(self, x):
            return tuple(self.inner(x).values())  # b, a: what a positional export gives

    path = tmp_path / "positional.onnx"
    torch.onnx.export(Positional().eval(), (torch.randn(2, 4),), str(path), dynamo=False, input_names=["x"],
                      output_names=["a", "b"], dynamic_axes={"x": {0: "batch"}, "a": {0: "batch"}, "b": {0: "batch"}})
    _config(project, "dict_net", outputs='["a", "b"]')
    run = project.run("--gate-onnx", str(path))
    assert run.result.ret == 1 and run.status("parity") == "failed"


def test_a_config_naming_outputs_the_model_does_not_return_fails_the_contract(project):
    _config(project, "dict_net", outputs='["a", "c"]')
    run = project.run()
    assert run.result.ret == 1
    assert run.status("contract") == "failed"
    assert "the model names its outputs ['b', 'a'], but the config's outputs ['c'] are not among them" in " ".join(
        run.document["checks"]["contract"]["messages"]
    )


def test_nested_tuple_outputs_are_flattened_in_order(project):
    _config(project, "nested_net", outputs='["a", "b", "a_plus_one"]')
    run = project.run()
    assert run.result.ret == 0, run.result.stdout.str()


def test_a_missing_clamp_that_shows_only_far_outside_the_range_is_blocked(project, tmp_path):
    path = tmp_path / "no_clamp.onnx"
    torch.onnx.export(saturating_net(clamp=False), (torch.randn(2, 4),), str(path), dynamo=False,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    _config(project, "saturating_net")
    run = project.run("--gate-onnx", str(path), "--hypothesis-profile=ci", "-k", "parity")
    assert run.status("parity") == "failed"
    assert run.document["parity"]["examples_out_of_range"] > 0
    assert any("outside the declared input range" in f for f in run.document["parity_failures"])
