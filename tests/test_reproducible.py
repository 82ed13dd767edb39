"""Artifacts that do not depend on where they were built: one sha256 from two folders, no absolute
paths, and a count of them in the report for a given file."""

from __future__ import annotations

import json
import shutil
import sys
import sysconfig
from pathlib import Path

import onnx  # imported before pytester snapshots sys.modules: onnx's extension cannot load twice
import pytest

from harness.runtime.provenance import count_absolute_paths, relative_source
from tests.conftest import CONFORMANCE, HERE, TWO_INPUT_NET

FRESH_EXPORT_CACHE = True  # each test exports for itself (tests/conftest.py)

ARTIFACT_CHECK = CONFORMANCE + "/test_artifact.py"


def _gate_in(folder: Path, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, *args: str) -> dict:
    """Run the gate's artifact check from ``folder``, as a user in that checkout would."""
    monkeypatch.chdir(folder)
    result = pytester.run(
        sys.executable, "-m", "pytest", ARTIFACT_CHECK, "--gate-config", "gate.toml",
        "--basetemp", str(folder / "tmp"), "--hypothesis-profile=smoke", "-p", "no:cacheprovider", *args,
    )  # fmt: skip
    reports = sorted((folder / "reports").glob("*/gate.json"))
    assert reports, result.stdout.str() + result.stderr.str()
    return json.loads(reports[-1].read_text())


def _project(root: Path, name: str) -> Path:
    folder = root / name
    folder.mkdir()
    shutil.copy(HERE / "user_models.py", folder / "user_models.py")
    (folder / "gate.toml").write_text(TWO_INPUT_NET % {"exporter": "dynamo"})
    return folder


def test_the_same_model_exported_in_two_folders_has_one_sha256_and_no_absolute_path(pytester, monkeypatch):
    first, second = _project(pytester.path, "clone-a"), _project(pytester.path, "second-clone")
    documents = [_gate_in(folder, pytester, monkeypatch) for folder in (first, second)]

    assert documents[0]["artifact"]["sha256"] == documents[1]["artifact"]["sha256"]
    data = Path(documents[0]["artifact"]["path"]).read_bytes()
    site_packages = sysconfig.get_paths()["purelib"]
    for leak in (str(first), str(second), str(pytester.path), site_packages, sys.prefix, str(Path.home())):
        assert leak.encode() not in data, f"{leak!r} is in the artifact"
    assert documents[0]["artifact"]["absolute_paths"] == 0
    # What debugging needs stays: source locations relative to the project and to the package root.
    assert b'File "user_models.py", line ' in data and b'File "torch/nn/modules/' in data
    assert b"user_models.TwoInputNet/conv: torch.nn.modules.conv.Conv2d" in data


def test_a_given_onnx_file_with_absolute_paths_has_them_counted_in_the_reports(pytester, monkeypatch):
    folder = _project(pytester.path, "project")
    exported = Path(_gate_in(folder, pytester, monkeypatch)["artifact"]["path"])
    model = onnx.load(str(exported))
    model.doc_string = 'File "/home/builder/checkout/user_models.py", line 18, in forward'
    model.graph.node[0].metadata_props.add(key="origin", value="/opt/venv/lib/torch/nn/modules/conv.py:565 C:\\b\\m.py")
    given = folder / "given.onnx"
    onnx.save_model(model, str(given))

    document = _gate_in(folder, pytester, monkeypatch, "--gate-onnx", str(given))

    assert document["artifact"]["origin"] == "given"
    assert document["artifact"]["absolute_paths"] == 3
    summary = (folder / "reports" / document["run_id"] / "summary.md").read_text()
    assert "- absolute paths: **3** in doc strings and metadata" in summary
    assert "/home/builder" not in summary and "/opt/venv" not in summary


def test_only_absolute_paths_count_not_scopes_urls_or_relative_paths():
    node = onnx.helper.make_node("Relu", ["x"], ["y"], name="/backbone/stages.0/Relu")
    texts = {
        "namespace": ": user_models.Net/backbone: torch.nn.Sequential/relu: aten.relu.default",
        "fx_node": "%relu : [num_users=1] = call_function[target=torch.ops.aten.relu.default](args = (%x,))",
        "relative": 'File "torch/nn/modules/conv.py", line 565, ratio 1/2, see https://onnx.ai/a/b',
        "absolute": 'File "/srv/ci/build/model.py", line 3 and D:\\builds\\model.py',
    }
    for key, value in texts.items():
        node.metadata_props.add(key=key, value=value)
    graph = onnx.helper.make_graph([node], "g", [onnx.helper.make_tensor_value_info("x", 1, [1])],
                                   [onnx.helper.make_tensor_value_info("y", 1, [1])])
    assert count_absolute_paths(onnx.helper.make_model(graph)) == 2


def test_a_path_outside_every_import_root_keeps_only_its_file_name():
    roots = ["/srv/venv/lib/python3.11/site-packages", "/srv"]
    assert relative_source("/srv/venv/lib/python3.11/site-packages/torch/nn/modules/conv.py", roots) == (
        "torch/nn/modules/conv.py"
    )
    assert relative_source("/srv/user_models.py", roots) == "user_models.py"
    assert relative_source("/elsewhere/generated.py", roots) == "generated.py"
