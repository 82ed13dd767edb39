"""harness/core/caller_state.py: every piece of caller state the in-process gate may change comes back,
also when the block raises."""

import logging
import os
import random
import sys
import warnings

import mlflow
import numpy as np
import pytest
import torch
from hypothesis import settings
from torch import nn

from harness.core.caller_state import preserved
from harness.core.profiles import register_profiles
from tests.test_api import _changed, _process_state


def test_everything_the_gate_may_change_is_restored_when_the_block_raises(tmp_path, monkeypatch):
    monkeypatch.setenv("ONNX_GATE_STATE_PROBE", "kept")
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout()).train()
    logger = logging.getLogger("a_training_job")
    logger.setLevel(logging.INFO)
    before = _process_state(model)
    with pytest.raises(RuntimeError, match="the gate blew up"):
        with preserved(model):
            register_profiles()
            settings.load_profile("ci")
            logger.setLevel(logging.ERROR)
            logging.getLogger().addHandler(logging.NullHandler())
            logging.disable(logging.CRITICAL)
            torch.set_num_threads(1)
            torch.set_default_dtype(torch.float64)
            torch.set_grad_enabled(False)
            torch.manual_seed(1), np.random.seed(1), random.seed(1)
            warnings.simplefilter("ignore")
            os.chdir(tmp_path)
            os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "2"
            del os.environ["ONNX_GATE_STATE_PROBE"]
            sys.path.insert(0, str(tmp_path))
            mlflow.set_tracking_uri(f"file:{tmp_path / 'mlruns'}")
            model.eval()
            sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115
            raise RuntimeError("the gate blew up")
    assert _changed(before, _process_state(model)) == []


def test_each_gate_imports_its_test_modules_under_its_own_hypothesis_profile(tmp_path, monkeypatch):
    """Hypothesis binds a test's settings when its module is imported. A conformance module kept
    from an earlier in-process gate ran the next gate under that gate's profile: 5 random examples
    (dev) where `ci` asks for 60 derandomized ones, and the drawn cases changed from run to run."""
    import importlib

    folder = tmp_path / "gate_checks"
    folder.mkdir()
    (folder / "test_drawn.py").write_text(
        "from hypothesis import given, strategies as st\n\n@given(st.integers())\ndef test_drawn(x):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(folder))
    register_profiles()
    bound = []
    kept = sys.modules.pop("test_drawn", None)
    for profile in ("dev", "ci"):
        with preserved(test_folders=[folder]):
            settings.load_profile(profile)
            module = importlib.import_module("test_drawn")
            bound.append(module.test_drawn._hypothesis_internal_use_settings)
        assert "test_drawn" not in sys.modules
    assert [(s.max_examples, s.derandomize) for s in bound] == [(5, False), (60, True)]
    if kept is not None:
        sys.modules["test_drawn"] = kept
