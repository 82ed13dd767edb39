"""`onnx-gate debug` on library models: they name their outputs, so the gate exports them through a
wrapper that prefixes every scope with ``inner``; debug must align through it with both exporters."""

from __future__ import annotations

import tomllib

import pytest
import torch

from harness.core import config as gate_config
from harness.core.strategies import InputCase
from harness.debug import DebugRequest, diagnose
from harness.debug.report import headline
from harness.runtime.export import export_onnx
from tests import real_models
from tests.conftest import HERE
from tests.real_architectures import CONFIGS

pytest.importorskip("transformers", reason="library models need transformers (pip install -e .[test])")

# One Linear deep inside each model, scaled by 1% in the exported copy only: a wrong weight that
# the final outputs show without saying where.
DEFECT = {
    "bert": "encoder.layer.1.intermediate.dense",
    "llama": "layers.1.mlp.up_proj",
    "vit": "layers.1.mlp.fc1",
    "wav2vec2": "encoder.layers.1.feed_forward.intermediate_dense",
}
CASE = InputCase(family="normal", sizes={"batch": 2, "sequence": 8, "samples": 800}, seed=1)


def _config(name: str, exporter: str) -> gate_config.GateConfig:
    return gate_config.parse({**tomllib.loads(CONFIGS[name]), "exporter": exporter}, HERE, search_dirs=(HERE,))


def _debug(name: str, exporter: str, tmp_path, *, defect: bool):
    config = _config(name, exporter)
    exported = getattr(real_models, name)()
    if defect:
        with torch.no_grad():
            exported.get_submodule(DEFECT[name]).weight.mul_(1.01)
    path = tmp_path / "model.onnx"
    export_onnx(exported, config, path)
    sizes = {dim: size for dim, size in CASE.sizes.items() if dim in config.dims}
    feeds = InputCase(CASE.family, sizes, seed=CASE.seed).materialize(config.inputs)
    request = DebugRequest(config, path, feeds, "test case", HERE.parent)
    return diagnose(request, getattr(real_models, name)())


# BERT with TorchScript runs in `make test`; the other seven pairs (dynamo exports take 10-20 s
# each) in `make test-slow`.
MATRIX = [
    pytest.param(name, exporter, marks=() if (name, exporter) == ("bert", "torchscript") else pytest.mark.slow)
    for name in sorted(DEFECT)
    for exporter in ("dynamo", "torchscript")
]


@pytest.mark.checks
@pytest.mark.parametrize("name, exporter", MATRIX)
def test_debug_aligns_a_library_model_through_the_exporters_wrapper_and_names_the_defect(name, exporter, tmp_path):
    result = _debug(name, exporter, tmp_path, defect=True)
    lines = headline(result)
    assert "under the exporter's `inner` wrapper" in result.alignment.scheme, lines
    # Most named modules align; the rest (called twice, returning tuples, folded away) say why.
    assert len(result.alignment.aligned) >= result.named_modules // 2, lines
    assert result.mismatch, lines
    culprit = result.verdict.culprit
    assert culprit is not None, "\n".join(lines)
    assert culprit.module == DEFECT[name], "\n".join(lines)
    assert lines[0].startswith(f"FAILED | the mismatch starts in `{DEFECT[name]}`"), lines
    # The exact view, through the same wrapper: the float64 graph departs at the same module.
    assert result.exact is not None and result.exact.departure().module == DEFECT[name], lines


@pytest.mark.slow
@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_debug_on_a_correct_library_model_export_names_no_culprit(exporter, tmp_path):
    result = _debug("bert", exporter, tmp_path, defect=False)
    lines = headline(result)
    assert not result.mismatch and result.verdict.culprit is None, lines
    assert result.verdict.rows and not any(row.exceeds for row in result.verdict.rows), lines
    assert result.exact is not None and result.exact.departure() is None, lines
    assert lines[0].startswith("PASSED"), lines
