"""Graph fidelity: the exported graph in float64 against PyTorch in float64 (harness/checks/fidelity.py,
harness/runtime/graph64.py). A faithful graph stays within what float64 rounding and float32 storage of its
constants explain; a defect does not, and the first module where it departs is named."""

from __future__ import annotations

import math
import tomllib

import numpy as np
import onnx
import pytest
import torch

from harness.checks import module_parity
from harness.compare.fidelity import FP64_SHARE, STORAGE_FACTOR, compare_fidelity, fidelity_bound
from harness.core import config as gate_config
from harness.gate.session import GateSession
from harness.runtime.fp64_mode import KeepFloat64
from harness.runtime.graph64 import Graph64, likely_double, to_float64, unsupported_ops
from tests import user_models
from tests.conftest import HERE, SMALL_LOCALIZATION_NET
from tests.test_module_parity import TAGGER, _session

ROOT = HERE.parent


# --- the rule, on arrays ---------------------------------------------------------------------


def test_a_faithful_value_is_within_its_bound_and_a_defect_is_named_with_both_figures():
    rng = np.random.default_rng(0)
    exact = rng.normal(size=1000)
    fp32 = exact.astype(np.float32).astype(np.float64)
    noise32 = float(np.abs(fp32 - exact).max())
    graph = exact * (1 + rng.uniform(-1, 1, exact.size) * 2.0**-52)  # float64 rounding only
    faithful = compare_fidelity("y", "case", graph, exact, fp32, storage=0.0)
    assert faithful and faithful.ratio < 1e-3, str(faithful)
    defect = compare_fidelity("y", "case", exact * (1 + 3e-6), exact, fp32, storage=0.0)
    assert not defect and defect.ratio > 1e3
    assert str(defect).startswith("FAILED | the graph is not the model: y (graph fp64 vs PyTorch fp64 ")
    assert "a faithful graph stays below" in str(defect)
    assert fidelity_bound(noise32, 3.0, 0.0) == pytest.approx(FP64_SHARE * max(noise32, 2 * 2.0**-23 * 3.0))
    assert fidelity_bound(0.0, 0.0, 1e-9) == pytest.approx(STORAGE_FACTOR * 1e-9, rel=1e-6)


def test_nan_on_one_side_only_fails_and_the_same_nan_on_both_does_not():
    exact = np.array([1.0, np.nan, 3.0])
    assert compare_fidelity("y", "c", exact.copy(), exact, exact, 0.0)
    one_sided = exact.copy()
    one_sided[0] = np.nan
    result = compare_fidelity("y", "c", one_sided, exact, exact, 0.0)
    assert not result and result.nonfinite == 1 and "NaN/Inf in 1 values" in str(result)


# --- the float64 graph and the float64 model ---------------------------------------------------


def test_constants_the_exporter_rounded_are_read_back_as_the_doubles_written():
    assert likely_double(np.float32(1 / math.sqrt(2))) == 1 / math.sqrt(2)  # GELU's
    assert likely_double(np.float32(1 / math.sqrt(64))) == 0.125
    assert likely_double(np.float32(1e-5)) == 1e-5  # an epsilon
    assert likely_double(np.float32(0.044715)) == 0.044715  # tanh-GELU's
    assert likely_double(np.float32(640.0)) == 640.0


def test_every_float32_becomes_float64_and_float16_casts_stay(tmp_path):
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])
    nodes = [
        onnx.helper.make_node("Constant", [], ["c"], value_float=0.1),
        onnx.helper.make_node("Mul", ["x", "c"], ["m"]),
        onnx.helper.make_node("Cast", ["m"], ["h"], to=onnx.TensorProto.FLOAT16),
        onnx.helper.make_node("Cast", ["h"], ["y"], to=onnx.TensorProto.FLOAT),
    ]
    model = onnx.helper.make_model(onnx.helper.make_graph(nodes, "g", [x], [y]))
    double = to_float64(model)
    casts = [n.attribute[0].i for n in double.graph.node if n.op_type == "Cast"]
    assert casts == [onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE]
    assert double.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    values = Graph64(path, ["y"], {}).infer({"x": np.array([1.0, 3.0], np.float32)}).values
    assert values["y"].dtype == np.float64
    assert values["y"][1] == float(np.float16(0.3))  # the float16 rounding the graph asks for


def test_a_model_that_casts_to_float32_stays_float64_in_the_reference_run():
    """transformers computes RoPE and RMSNorm in float32 inside a .double() model; the reference keeps
    those in float64, while a cast to float16 is the model's own precision and stays."""

    def narrowing(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        ones = torch.ones(2, dtype=torch.float32)
        return x.float(), x.to(torch.float32), x.to(dtype=torch.float32), ones, x.half()

    x = torch.ones(2, dtype=torch.float64) / 3
    with KeepFloat64():
        results = narrowing(x)
    assert [r.dtype for r in results] == [torch.float64] * 4 + [torch.float16]
    record: list[np.ndarray] = []
    with KeepFloat64(widen=False, record=record):
        torch.tensor([[0.1, 0.9], [0.8, 0.2]]).argmax(dim=-1)
        torch.max(torch.tensor([[0.1, 0.9]]), dim=1)
        torch.tensor([0.1, 0.9]).max()  # no dim: a value, not an index
    assert [r.shape for r in record] == [(2, 2), (1, 2)]


@pytest.mark.checks
def test_ops_without_a_float64_reference_are_named_and_fidelity_says_it_cannot_judge(tmp_path):
    """An ONNX Runtime-optimised file (com.microsoft ops): not judged, in one line; parity then
    judges alone with every rule it has."""
    import onnxruntime as ort

    (tmp_path / "good").mkdir()
    good = _session(tmp_path / "good", TAGGER, "torchscript", user_models.argmax_tagger())
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    ort.InferenceSession(str(good.artifact.path), options, providers=["CPUExecutionProvider"])
    assert unsupported_ops(onnx.load(str(tmp_path / "optimised.onnx"))) == ["BiasGelu"]
    section = {**tomllib.loads(TAGGER), "onnx": str(tmp_path / "optimised.onnx")}
    session = GateSession(gate_config.parse(section, tmp_path, search_dirs=(HERE,)), work_dir=tmp_path / "given")
    session.prepare()
    result = session.check_fidelity(root=ROOT)
    assert result.not_judged and str(result) == "graph fidelity: not judged (ops: BiasGelu)"
    assert not session.fidelity_judged and session.parity_summary()["fidelity"]["status"] == "not judged"


# --- on models ---------------------------------------------------------------------------------


@pytest.mark.checks
@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_an_argmax_tagger_with_a_half_precision_head_is_blocked_on_its_logits_and_the_head_named(exporter, tmp_path):
    """The tags themselves flip on ~2e-4 of the values; the logits behind the ArgMax, judged in
    float64, are far beyond their bound on every case (70-150x, though the rounded weights, no
    parameter's, count as constants the exporter computed and widen the bound themselves)."""
    session = _session(tmp_path, TAGGER, exporter, user_models.argmax_tagger(head_through_fp16=True))
    result = session.check_fidelity(root=ROOT)
    assert not result, str(result)
    logits = [c for c in result.comparisons if c.value.startswith("the float input of ArgMax")]
    assert logits and all(not c for c in logits) and min(c.ratio for c in logits) > 30, str(result)
    assert result.departure is not None and result.departure.module == "head", str(result)
    assert "first in `head` (Linear, user_models.py:" in str(result)


@pytest.mark.checks
def test_a_correct_tagger_passes_with_its_logits_judged_and_every_unaligned_module_named(tmp_path):
    session = _session(tmp_path, TAGGER, "torchscript", user_models.argmax_tagger())
    result = session.check_fidelity(root=ROOT)
    assert result and result.worst is not None and result.worst.ratio < 1, str(result)
    assert any(c.value.startswith("the float input of ArgMax") for c in result.comparisons)
    entry = session.parity_summary()["fidelity"]
    assert entry["status"] == "passed" and entry["seconds"] > 0 and entry["worst"]["ratio"] < 1


@pytest.mark.checks
def test_a_weight_scaled_by_a_few_ppm_is_named_in_the_module_that_holds_it(tmp_path):
    exported = user_models.argmax_tagger()
    with torch.no_grad():
        exported.encoder[0].weight.mul_(1 + 4e-6)
    session = _session(tmp_path, TAGGER, "dynamo", exported)
    result = session.check_fidelity(root=ROOT)
    assert not result and result.departure is not None, str(result)
    assert result.departure.module == "encoder.0", str(result)


@pytest.mark.checks
def test_the_cases_fidelity_shares_with_module_parity_run_once_and_both_verdicts_are_unchanged(tmp_path, monkeypatch):
    """Graph fidelity runs module parity's cases hooked and evaluates the graph once for both
    checks (GateSession._fidelity_runs): on a defect both verdicts, their figures and the module
    named are what each check finds alone, with fewer float64 evaluations of the graph."""
    evaluations = [0]
    infer = Graph64.infer

    def counted(self, feeds, values=()):
        evaluations[0] += 1
        return infer(self, feeds, values)

    monkeypatch.setattr(Graph64, "infer", counted)
    for folder in ("shared", "alone", "modules"):
        (tmp_path / folder).mkdir()
    defective = user_models.argmax_tagger(head_through_fp16=True)
    shared = _session(tmp_path / "shared", TAGGER, "dynamo", defective)
    fidelity, modules = shared.check_fidelity(root=ROOT), shared.check_module_parity(root=ROOT)
    together = evaluations[0]

    evaluations[0] = 0
    alone = _session(tmp_path / "alone", TAGGER, "dynamo", defective, module_parity=False)
    fidelity_alone = alone.check_fidelity(root=ROOT)
    modules_alone = _session(tmp_path / "modules", TAGGER, "dynamo", defective).check_module_parity(root=ROOT)
    apart = evaluations[0]

    assert not fidelity and not modules and modules.culprits and modules.culprits[0].module == "head", str(modules)
    assert str(fidelity) == str(fidelity_alone) and fidelity.comparisons == fidelity_alone.comparisons
    assert str(modules) == str(modules_alone) and modules.culprits == modules_alone.culprits
    assert together == apart - len(modules.cases), (together, apart)
    assert modules.with_fidelity == len(modules.cases) and modules_alone.with_fidelity == 0
    lines = "\n".join(module_parity.summary_lines(modules.to_dict()))
    assert f"({len(modules.cases)} of its cases run once with graph fidelity's, their time counted there)" in lines


@pytest.mark.checks
def test_parameters_taken_out_of_the_proto_give_the_float64_graph_bit_for_bit(tmp_path, monkeypatch):
    """Graph64 hands the model's own large parameters to its evaluators as numpy arrays instead of
    round-tripping them through a float64 proto (``_lift_parameters``): on a ConvNeXt exported by
    dynamo, whose graph holds derived constants, the values and the storage effects of those
    constants (the perturbed copy) are the same bits."""
    from harness.models import localization_net
    from harness.runtime import graph64
    from harness.runtime.export import export_onnx
    from harness.runtime.graph64 import model_constants

    config = gate_config.parse(tomllib.loads(SMALL_LOCALIZATION_NET % {"exporter": "dynamo"}), tmp_path)
    model = localization_net(size="test").eval()
    export_onnx(model, config, tmp_path / "model.onnx")
    feeds = {"mel_spectrogram": np.random.default_rng(3).normal(size=(2, 3, 128, 32)).astype(np.float32)}
    evaluations = []
    for lift_above in (1 << 62, 0):
        monkeypatch.setattr(graph64, "LIFT_ABOVE_BYTES", lift_above)
        graph = Graph64(tmp_path / "model.onnx", config.outputs, model_constants(model))
        assert graph.available, graph.problem
        evaluations.append((graph.infer(feeds), graph.derived))
    (proto, derived), (lifted, derived_too) = evaluations
    assert derived and derived == derived_too and proto.storage, "the graph must hold derived constants"
    assert proto.values.keys() == lifted.values.keys() and proto.storage.keys() == lifted.storage.keys()
    assert all(np.array_equal(proto.values[k], lifted.values[k]) for k in proto.values)
    assert all(np.array_equal(proto.storage[k], lifted.storage[k]) for k in proto.storage)
    assert any(proto.storage[k].max() > 0 for k in proto.storage)


@pytest.mark.checks
def test_a_graph_the_reference_evaluator_refuses_to_load_is_judged_whole_by_parity(tmp_path, monkeypatch):
    """Its ops all supported, the graph was once taken as judged by fidelity before it was built:
    fidelity then said "not judged" and parity judged the runtime alone, so neither judged the graph.
    (A real evaluator cannot be made to refuse a file ORT runs on demand: the load is made to fail.)"""
    from harness.core.inputs import InputCase
    from harness.runtime import graph64

    section = tomllib.loads(SMALL_LOCALIZATION_NET % {"exporter": "torchscript"})
    far_out = InputCase(family="large", sizes={"batch": 2}, magnitude=1e4)

    def session_in(folder) -> GateSession:
        session = GateSession(gate_config.parse(section, folder, search_dirs=(HERE,)), work_dir=folder)
        session.prepare()
        return session

    judged = session_in(tmp_path / "judged")
    assert judged.fidelity_judged
    scaled = {c.output: c.tolerance.atol for c in judged.check_parity(far_out)}
    assert all(atol > judged.config.tolerance.atol for atol in scaled.values()), scaled  # the runtime-only rule

    def refuses(*args, **kwargs):
        raise ValueError("an attribute this evaluator does not know")

    monkeypatch.setattr(graph64, "_evaluator", refuses)
    refused = session_in(tmp_path / "refused")
    assert not refused.fidelity_judged
    result = refused.check_fidelity(root=ROOT)
    assert result.not_judged and "cannot load the graph: an attribute this evaluator does not know" in str(result)
    whole = {c.output: c.tolerance.atol for c in refused.check_parity(far_out)}
    assert whole == dict.fromkeys(scaled, refused.config.tolerance.atol)  # the whole rule, its own bound
