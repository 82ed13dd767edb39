"""The export cache: an unchanged model is exported once; any change, a damaged entry or
--gate-no-cache exports again; the shipped bytes are the same either way."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import torch

from harness.core import config as gate_config
from harness.gate.session import GateSession
from harness.models import localization_net
from tests.conftest import CONFORMANCE, HERE, SMALL_LOCALIZATION_NET

FRESH_EXPORT_CACHE = True  # each test exports for itself (tests/conftest.py)

ARTIFACT_CHECK = (CONFORMANCE + "/test_artifact.py",)


def _prepared(
    tmp_path: Path, *, model: torch.nn.Module | None = None, change: tuple[str, str] = ("", "")
) -> GateSession:
    template = SMALL_LOCALIZATION_NET.replace(*change) if change[0] else SMALL_LOCALIZATION_NET
    section = tomllib.loads(template % {"exporter": "torchscript"})
    work = tmp_path / f"run{len(list(tmp_path.glob('run*')))}"
    loaded = gate_config.parse(section, tmp_path, search_dirs=(HERE,))
    session = GateSession(loaded, work_dir=work, model=model)
    session.prepare()
    assert session.artifact is not None, session.artifact_error
    return session


def test_a_rerun_of_an_unchanged_model_reuses_the_export_and_ships_the_same_bytes(project):
    project.write_config()
    first = project.run(paths=ARTIFACT_CHECK)
    second = project.run(paths=ARTIFACT_CHECK)
    forced = project.run("--gate-no-cache", paths=ARTIFACT_CHECK)
    statuses = [run.document["artifact"]["cache"]["status"] for run in (first, second, forced)]
    assert statuses == ["miss", "hit", "refreshed"], statuses
    from_cache = [run.document["artifact"]["cache"]["from_cache"] for run in (first, second, forced)]
    assert from_cache == [False, True, False]
    assert len({run.document["artifact"]["sha256"] for run in (first, second, forced)}) == 1
    summary = (project.path / "reports" / second.document["run_id"] / "summary.md").read_text()
    assert "- from the export cache: yes (hit" in summary


def test_the_gate_no_cache_option_is_documented_with_its_default(pytester):
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(["*--gate-no-cache*", "*Default: False*"])


KWARGS = 'model_kwargs = { size = "test" }'
CHANGES = {
    "opset": (KWARGS, KWARGS + "\nopset = 17"),
    "model-kwargs": (KWARGS, 'model_kwargs = { size = "test", seed = 1 }'),
    "input-range": ("range = [-4.0, 4.0]", "range = [-4.0, 4.5]"),
    "batch-dims": ("batch = [1, 4]", "batch = [1, 5]"),
    "outputs-only-checked-by-an-invariant": ("max = 1.0", "max = 1.5"),
}


@pytest.mark.checks
@pytest.mark.parametrize("change", CHANGES)
def test_a_config_change_that_can_change_the_bytes_exports_again(tmp_path, change):
    first = _prepared(tmp_path)
    changed = _prepared(tmp_path, change=CHANGES[change])
    assert first.artifact_cache.status == "miss"
    # Invariants are checked on the outputs; they never enter the export, so they reuse it.
    expected = "hit" if change.startswith("outputs-only") else "miss"
    assert changed.artifact_cache.status == expected, changed.artifact_cache


@pytest.mark.checks
def test_changed_weights_export_again(tmp_path):
    first = _prepared(tmp_path, model=localization_net("test"))
    again = _prepared(tmp_path, model=localization_net("test"))
    model = localization_net("test")
    with torch.no_grad():
        model.backbone.stem[0].weight[0, 0, 0, 0] += 1e-6
    changed = _prepared(tmp_path, model=model)
    statuses = [session.artifact_cache.status for session in (first, again, changed)]
    assert statuses == ["miss", "hit", "miss"]
    assert changed.artifact.sha256 != first.artifact.sha256


@pytest.mark.checks
@pytest.mark.parametrize("damage", ["modified", "truncated"])
def test_a_damaged_cache_entry_is_detected_and_exported_again_never_used(tmp_path, export_cache_dir, damage):
    first = _prepared(tmp_path)
    cached = export_cache_dir / first.artifact_cache.key / "model.onnx"
    data = bytearray(cached.read_bytes())
    if damage == "modified":
        data[len(data) // 2] ^= 0xFF
    else:
        del data[len(data) // 3:]
    cached.write_bytes(bytes(data))
    second = _prepared(tmp_path)
    assert second.artifact_cache.status == "miss"
    assert "modified or truncated" in second.artifact_cache.reason
    assert second.artifact.sha256 == first.artifact.sha256
    assert _prepared(tmp_path).artifact_cache.status == "hit"  # the entry was repaired


def test_the_cache_stays_out_of_the_repository(monkeypatch, tmp_path):
    from harness.runtime.cache import CACHE_DIR_ENV, cache_dir

    monkeypatch.delenv(CACHE_DIR_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "onnx-gate"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == Path.home() / ".cache" / "onnx-gate"
