"""End to end: a gate over a padded sequence model with samples, and over a model that ignores an
input; what gate.json and summary.md say about them."""

from __future__ import annotations

import numpy as np

from tests.conftest import TWO_INPUT_NET

PADDED = """
model = "user_models:padded_sequence_net"
exporter = "%(exporter)s"
outputs = ["steps"]
report_dir = "reports"
samples = ["samples/*.npz"]

[[inputs]]
name = "tokens"
shape = ["batch", "sequence", 4]
range = [-1.0, 1.0]
dims = { batch = [1, 4], sequence = [2, 12] }
pad = { value = 0.0 }

[[inputs]]
name = "attention_mask"
shape = ["batch", "sequence"]
dtype = "int64"
mask = { padding = "both", min_valid = 1 }

[padded_outputs]
steps = { by = "attention_mask", axis = 1 }
"""

# TWO_INPUT_NET with its receivers branch gated by a zero-initialised weight.
IGNORING = TWO_INPUT_NET.replace("user_models:two_input_net", "user_models:ignores_receivers_net")


def _samples(folder):
    folder.mkdir()
    rng = np.random.default_rng(0)
    mask = np.ones((2, 7), np.int64)
    mask[1, 4:] = 0
    tokens = (rng.normal(0, 0.3, (2, 7, 4)) * mask[..., None]).astype(np.float32)
    np.savez(folder / "recorded.npz", tokens=tokens, attention_mask=mask)


def test_a_padded_sequence_gate_passes_and_reports_samples_and_left_out_values(project):
    _samples(project.path / "samples")
    project.write_config(PADDED, exporter="torchscript")
    # A process of its own: which examples Hypothesis draws depends on the modules loaded (it mines
    # their constants), and this test counts the drawn sample cases.
    run = project.run("--hypothesis-profile=ci", "-p", "no:randomly", subprocess=True)
    assert run.result.ret == 0, run.result.stdout.str()
    parity = run.document["parity"]
    assert parity["examples_from_samples"] >= 1, parity
    steps = parity["outputs"]["steps"]
    assert steps["values_left_out_as_padding"] > 0 and steps["values_compared"] > 0
    assert run.document["checks"]["sensitivity"]["status"] == "passed"
    summary = (project.path / "reports" / run.document["run_id"] / "summary.md").read_text()
    assert "drawn from the configured samples" in summary and "left out of the comparison: steps" in summary


def test_an_ignored_input_is_a_finding_in_every_report_and_blocks_only_when_asked(project):
    project.write_config(IGNORING, exporter="torchscript")
    run = project.run("-k", "sensitivity or contract")
    assert run.result.ret == 0, run.result.stdout.str()
    [finding] = [f for f in run.document["parity"]["findings"] if f["kind"] == "ignored_input"]
    assert finding["output"] == "receivers" and not finding["blocking"]
    summary = (project.path / "reports" / run.document["run_id"] / "summary.md").read_text()
    assert "ignored_input | receivers" in summary

    project.write_config("block_on_ignored_inputs = true\n" + IGNORING, exporter="torchscript")
    blocked = project.run("-k", "sensitivity or contract")
    assert blocked.result.ret == 1 and blocked.status("sensitivity") == "failed"
    blocked.result.stdout.fnmatch_lines(["*sensitivity*receivers*"])
