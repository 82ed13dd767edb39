"""Rollout parity for models that carry state across calls: the config, the judge on made-up
values, and the suite of real stateful models (transformers decoders with a KV cache, a streaming
GRU) with a correct export passing and each defect blocked at the step where it shows."""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, seed, settings

from harness.bench.compare import CompareSettings, compare, load_run
from harness.checks.rollout import Drift, full_rollout, judge_rollout, rollout_cases
from harness.core import config as gate_config
from harness.core.errors import ConfigError
from harness.core.inputs import InputCase
from harness.gate.session import GateSession
from harness.runtime.rollout import RolloutCase, RolloutRuns, Trajectory, first_feeds
from tests import stateful_models, trained_models
from tests.conftest import BENCHMARKS

HERE = Path(__file__).resolve().parent


def _config(text: str) -> gate_config.GateConfig:
    return gate_config.parse(tomllib.loads(text), HERE, search_dirs=(HERE,))


def _decoder(**changes) -> gate_config.GateConfig:
    return _config(stateful_models.decoder_config("tiny_llama", "torchscript", **changes))


# --- the config ----------------------------------------------------------------------------------


def test_state_tables_expand_per_layer_in_the_order_transformers_flattens_a_cache():
    config = _decoder()
    names = [spec.name for spec in config.inputs]
    assert names == ["input_ids", "attention_mask", "position_ids", "past_key_values.0.key", "past_key_values.0.value",
                     "past_key_values.1.key", "past_key_values.1.value"]  # fmt: skip
    assert config.outputs == ("logits", "present.0.key", "present.0.value", "present.1.key", "present.1.value")
    assert [(p.input, p.output, p.grows) for p in config.rollout.states][:1] == [("past_key_values.0.key", "present.0.key", "past_sequence")]
    assert [(rule.input, rule.rule, rule.source) for rule in config.rollout.feeds] == [
        ("input_ids", "argmax", "logits"), ("attention_mask", "extend", None), ("position_ids", "advance", None),
    ]  # fmt: skip
    assert config.summary()["rollout"]["feeds"]["input_ids"] == "argmax(logits)"


def test_a_dimension_that_sums_two_others_follows_their_sizes():
    config = _decoder()
    mask = next(spec for spec in config.inputs if spec.name == "attention_mask")
    assert "past_sequence + sequence" not in config.dims and mask.symbolic_dims == ("batch",)
    feeds = InputCase("normal", {"batch": 3, "sequence": 4, "past_sequence": 5}, 0).materialize(config)
    assert feeds["attention_mask"].shape == (3, 9) and feeds["past_key_values.1.value"].shape == (3, 1, 5, 16)


def test_a_stateless_config_has_no_rollout():
    config = _config(stateful_models.gru_config("streaming_gru", "torchscript").split("[[state]]")[0])
    assert not config.rollout.declared and "rollout" not in config.summary()


def _replace(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new)


GRU = stateful_models.gru_config("streaming_gru", "torchscript")


@pytest.mark.parametrize(
    "text, message",
    [
        (_replace(GRU, 'feed = { frame = "next" }', "feed = {}"), "rollout.feed must say how each call makes input 'frame'"),
        (_replace(GRU, 'feed = { frame = "next" }', 'feed = { frame = "next", h = "same" }'), "rollout.feed names 'h', which is not a declared [[inputs]] name"),
        (_replace(GRU, 'feed = { frame = "next" }', 'feed = { frame = "argmax(scores)" }'), "'scores' is not an output"),
        (_replace(GRU, 'feed = { frame = "next" }', 'feed = { frame = "repeat" }'), "rollout.feed.frame must be one of argmax(<output>), extend, advance, next, same"),
        (_replace(GRU, 'output = "h_next"', 'output = "h_next"\ngrows = "time"'), "state[0].grows must name a symbolic dimension of its shape"),
        (_replace(GRU, 'input = "h"', 'input = "h.{i}"'), "put {i} in both input and output names"),
        (_replace(GRU, 'input = "h"\noutput = "h_next"', 'input = "h.{i}"\noutput = "h_next.{i}"'), "say how many layers, e.g. layers = 2"),
        (_replace(GRU, 'outputs = ["logits"]', 'outputs = ["logits", "h_next"]'), "state output 'h_next' is also in outputs"),
        (GRU.split("[[state]]")[0] + '[rollout]\nfeed = { frame = "next" }\n', "[rollout] needs at least one [[state]] table"),
        (_replace(GRU, "steps = 32", "steps = 0"), "rollout.steps must be an integer >= 1, got 0"),
        (_replace(GRU, 'shape = ["batch", 16]', 'shape = ["batch", "batch + width"]'), "sums 'width', which no input has"),
        (_replace(_decoder_text := stateful_models.decoder_config("tiny_llama", "torchscript"), 'range = [1, 1]', 'mask = { padding = "left" }'),
         "runs along 'past_sequence + sequence', a sum of dimensions"),
        # The mask declared over the tokens alone: transformers would take the short mask silently.
        (_replace(_decoder_text, '"past_sequence + sequence"', '"sequence"'),
         "rollout.feed.attention_mask = 'extend' adds a column per call: the input's last dimension must span the cache and the tokens"),
        (_replace(_decoder_text, 'attention_mask = "extend", position_ids = "advance"', 'attention_mask = "advance", position_ids = "extend"'),
         "rollout.feed.attention_mask = 'advance' gives the new tokens' positions"),
        (_replace(GRU, 'feed = { frame = "next" }', 'feed = { frame = "extend" }'), "it needs a [[state]] with grows"),
        # Forgetting grows on a decoder's cache: its mask cannot grow with it.
        (_decoder_text.replace('grows = "past_sequence"\n', ''), "'extend' grows a mask with a cache: it needs a [[state]] with grows"),
        (_replace(GRU, "dims = { batch = [1, 4] }", "dims = { batch = [0, 4] }"),
         "with 1 <= low <= high, got [0, 4] (0 only for a cache's length: a [[state]]'s grows dimension)"),
    ],
    ids=["feed-missing", "feed-on-state", "argmax-unknown", "unknown-rule", "grows-elsewhere", "layer-half", "layers-missing",
         "output-twice", "rollout-alone", "no-steps", "derived-unknown", "mask-over-a-sum", "mask-without-cache",
         "rules-swapped", "extend-without-cache", "grows-forgotten", "zero-without-grows"],
)  # fmt: skip
def test_a_state_config_mistake_is_one_line_naming_it(text, message):
    with pytest.raises(ConfigError) as raised:
        _config(text)
    assert message in str(raised.value) and "\n" not in str(raised.value), str(raised.value)


# --- the first call ------------------------------------------------------------------------------


def test_the_first_call_masks_the_empty_cache_and_each_rows_left_padding():
    config = _decoder()
    rollout = RolloutCase(InputCase("uniform", {"batch": 3, "sequence": 4, "past_sequence": 2}, 0), 3, (0, 2, 9))
    feeds = first_feeds(config, rollout)
    assert feeds["attention_mask"].tolist() == [[0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 0, 1]]
    # As transformers counts positions under left padding: the first valid token is position 0.
    assert feeds["position_ids"].tolist() == [[0, 1, 2, 3], [0, 0, 0, 1], [0, 0, 0, 0]]
    assert not feeds["past_key_values.0.key"].any()


def test_a_decoding_loop_draws_a_next_input_at_the_sizes_it_runs_at():
    from harness.bench.decode import _next

    config = _config(_replace(stateful_models.decoder_config("tiny_llama", "torchscript"), 'position_ids = "advance"', 'position_ids = "next"'))
    stepped = {"input_ids": np.zeros((2, 1), np.int64), "attention_mask": np.ones((2, 7), np.int64),
               "position_ids": np.zeros((2, 1), np.int64)}  # fmt: skip
    made = _next(config, 1, stepped, {"logits": np.zeros((2, 1, stateful_models.VOCAB), np.float32)})
    assert made["position_ids"].shape == (2, 1) and made["attention_mask"].shape == (2, 8)


# --- the judge on made-up values -----------------------------------------------------------------


def _gru_runs(onnx_error: list[float], *, logits_gap: float = 1.0) -> RolloutRuns:
    """Made-up runs of the GRU config: PyTorch fp32, ONNX Runtime off by ``onnx_error[step]`` in h."""
    config = _config(GRU)
    rng = np.random.default_rng(0)
    torch32, ort, torch64 = Trajectory("torch-cpu-float32"), Trajectory("onnxruntime"), Trajectory("torch-cpu-float64")
    for error in onnx_error:
        h = rng.uniform(-1, 1, (2, 2, 32))
        logits = np.zeros((2, 8))
        logits[:, 0], logits[:, 1] = 1.0, 1.0 - logits_gap
        torch64.outputs.append({"logits": logits, "h_next": h})
        torch32.outputs.append({"logits": logits.astype(np.float32), "h_next": (h + 1e-8).astype(np.float32)})
        ort.outputs.append({"logits": logits.astype(np.float32), "h_next": (h + error).astype(np.float32)})
    rollout = RolloutCase(InputCase("uniform", {"batch": 2}, 0), len(onnx_error))
    stepped = tuple({"frame": np.zeros((2, 16), np.float32)} for _ in onnx_error)
    return RolloutRuns(rollout, stepped, torch32, torch64, ort, None), config


def test_an_error_that_grows_with_the_step_is_blocked_where_it_leaves_the_bound_and_its_drift_reported():
    runs, config = _gru_runs([1e-7 * 4**step for step in range(8)])
    result = judge_rollout(runs, config)
    assert not result
    assert result.blocks[0].startswith("step 4: ONNX Runtime, state output h_next")  # 2.6e-5: past atol and the noise, result.blocks[0]
    drift = next(d for d in result.drift if d.output == "h_next")
    assert drift.slope > 0 and drift.ratios[0] < 1 < drift.ratios[-1]


def test_a_steady_error_within_the_noise_passes_and_does_not_grow():
    result = judge_rollout(*_gru_runs([1e-8] * 8))
    assert result, str(result)
    assert Drift("h", (0.1, 0.1, 0.1)).crossing_step is None
    assert Drift("h", (0.1, 0.2, 0.3)).crossing_step == pytest.approx(9.0)


def test_a_state_declared_without_grows_that_grows_blocks_and_says_what_to_declare():
    runs, config = _gru_runs([1e-8] * 3)
    runs.torch32.feeds[:] = [{"frame": np.zeros((2, 16), np.float32), "h": np.zeros((2, 2, 32), np.float32)}] * 3
    runs.torch32.outputs[2] = {**runs.torch32.outputs[2], "h_next": np.zeros((2, 2, 33), np.float32)}
    result = judge_rollout(runs, config)
    assert "step 2: state output h_next has shape [2, 2, 33] from PyTorch, but its input h had [2, 2, 32]: " \
           "a state that grows is a cache, declare grows = \"<its length>\"" in result.blocks, result.blocks


def test_a_drawn_start_keeps_the_drawn_cache_valid_and_positions_going_on_from_it():
    config = _decoder()
    rollout = RolloutCase(InputCase("uniform", {"batch": 2, "sequence": 3, "past_sequence": 5}, 0), 3, (0, 2), start="drawn")
    feeds = first_feeds(config, rollout)
    assert feeds["attention_mask"].all() and feeds["attention_mask"].shape == (2, 8)
    assert feeds["position_ids"].tolist() == [[5, 6, 7], [5, 6, 7]]
    assert feeds["past_key_values.1.value"].any()  # the drawn cache, not zeros
    assert "from a drawn state" in rollout.describe() and "left padding" not in rollout.describe()


def test_a_runtime_that_cannot_make_a_call_blocks_with_the_step():
    runs, config = _gru_runs([1e-8] * 4)
    runs.onnxruntime.outputs[2:] = []
    runs.onnxruntime.stopped = "step 2: Fail: Reshape cannot reshape"
    result = judge_rollout(runs, config)
    assert "onnxruntime could not make the call at step 2: Fail: Reshape cannot reshape" in result.blocks


def _decoder_runs(ort_logits_at_step1: np.ndarray, torch_logits: np.ndarray) -> tuple[RolloutRuns, gate_config.GateConfig]:
    """Made-up runs of the decoder config over 3 steps, one row: the same cache everywhere, the
    logits PyTorch's except ONNX Runtime's at step 1."""
    config = _decoder()
    state = {f"present.{i}.{kind}": np.zeros((1, 1, 2, 16)) for i in range(2) for kind in ("key", "value")}
    torch32, ort, torch64 = Trajectory("torch-cpu-float32"), Trajectory("onnxruntime"), Trajectory("torch-cpu-float64")
    for step in range(3):
        logits = torch_logits[None, None, :]
        torch64.outputs.append({"logits": logits, **state})
        torch32.outputs.append({"logits": logits.astype(np.float32), **{k: v.astype(np.float32) for k, v in state.items()}})
        ours = ort_logits_at_step1[None, None, :] if step == 1 else logits
        ort.outputs.append({"logits": ours.astype(np.float32), **{k: v.astype(np.float32) for k, v in state.items()}})
    stepped = tuple({"attention_mask": np.ones((1, 2), np.int64)} for _ in range(3))
    rollout = RolloutCase(InputCase("uniform", {"batch": 1, "sequence": 1, "past_sequence": 1}, 0), 3)
    return RolloutRuns(rollout, stepped, torch32, torch64, ort, None), config


def test_a_greedy_token_that_flips_on_a_tie_is_reported_and_one_that_flips_beyond_the_noise_blocks():
    logits = np.linspace(-1.0, 1.0, stateful_models.VOCAB)
    tie = logits.copy()
    tie[-2] = tie[-1] = 1.0  # PyTorch's top two are equal: either token is right
    flipped = tie.copy()
    flipped[-1] += 2e-7  # ONNX Runtime's rounding picks the other one (argmax takes the first of equals)
    result = judge_rollout(*_decoder_runs(flipped, tie))
    assert result, str(result)
    agreement = result.greedy[0]
    assert (agreement.first_difference, agreement.row, agreement.tie) == (1, 0, True), agreement
    assert "first differs at step 1 (row 0), where PyTorch's top-2 logits are 0 apart (a tie within PyTorch's own noise" in str(agreement)

    defect = logits.copy()
    defect[0] = 5.0  # a token PyTorch ranks last
    result = judge_rollout(*_decoder_runs(defect, logits))
    assert not result
    assert any(block.startswith("greedy tokens from logits: ONNX Runtime first differs at step 1 (row 0)")
               and "beyond PyTorch's own noise: a defect" in block for block in result.blocks), result.blocks


# --- the suite -----------------------------------------------------------------------------------

DECODERS = ["tiny_llama", "tiny_gpt2"]
STREAMS = ("streaming_gru", "streaming_speaker_encoder")


def _session(text: str, work_dir: Path) -> GateSession:
    session = GateSession(gate_config.parse(tomllib.loads(text), work_dir, search_dirs=(HERE,)), work_dir=work_dir)
    session.prepare()
    return session


def _rollouts(session: GateSession, drawn: int) -> list:
    """The full-length rollout and ``drawn`` rollouts from the property test's strategy."""
    results = [session.check_rollout(full_rollout(session.config, session.batch_dim))]

    @settings(max_examples=drawn, database=None, derandomize=True, deadline=None)
    @given(rollout=rollout_cases(session.config, session.batch_dim))
    def drawn_rollouts(rollout):
        results.append(session.check_rollout(rollout))

    seed(0)(drawn_rollouts)()
    return results


def _config_of(model: str, exporter: str) -> str:
    if model == "streaming_speaker_encoder":
        return stateful_models.STREAMING_SPEAKER % {"exporter": exporter}
    if model == "streaming_gru":
        return stateful_models.gru_config(model, exporter)
    if model == "tiny_t5":
        return stateful_models.seq2seq_config(model, exporter)
    return stateful_models.decoder_config(model, exporter)


@pytest.mark.checks
@pytest.mark.parametrize(
    "model, exporter",
    [*((m, e) for m in (*DECODERS, "streaming_gru", "streaming_speaker_encoder") for e in ("torchscript", "dynamo")),
     ("tiny_t5", "torchscript"), pytest.param("tiny_t5", "dynamo", marks=pytest.mark.slow)],
)  # fmt: skip
def test_a_correct_export_of_a_stateful_model_passes_every_step(model, exporter, tmp_path):
    """Small random configs, and Resemblyzer's trained LSTM (weights from its wheel) as a stream."""
    if model == "streaming_speaker_encoder" and (missing := trained_models.weights_missing("speaker_encoder")):
        pytest.skip(missing)
    session = _session(_config_of(model, exporter), tmp_path)
    if session.artifact is None:
        pytest.xfail(f"{exporter} cannot export {model}: {session.artifact_error}")
    results = _rollouts(session, drawn=2)
    assert all(results), next(str(r) for r in results if not r)
    full = results[0]
    assert full.fidelity_judged and full.steps == session.config.rollout.steps
    if model not in STREAMS:  # the config allows an empty cache: the first call has one
        assert "past_sequence=0" in full.rollout, full.rollout
    assert max(full.fidelity_ratios) < 1e-3, full.fidelity_ratios  # faithful graphs sit far below the bound
    if model not in STREAMS:
        assert full.greedy[0].first_difference is None or full.greedy[0].tie, str(full.greedy[0])


DEFECTS = {
    # name: (config, the step and the words the first block names, where the walk says the graph departs)
    "gru_state_from_wrong_layer": (stateful_models.gru_config("gru_state_from_wrong_layer", "torchscript"),
                                   "step 0: graph fidelity, state output h_next",
                                   "in the model's own forward, after every aligned module agreed (GRUStateFromWrongLayer"),
    "gru_state_ignored": (stateful_models.gru_config("gru_state_ignored", "torchscript"), "step 1: graph fidelity, logits",
                          "the graph departs from the model first in `head`"),
    # From an empty cache, 2 tokens of prompt and one per call: 5 positions at step 3, cut to the trace's 2 + 2.
    "cache_cut_at_trace_length": (stateful_models.decoder_config("cache_cut_at_trace_length", "torchscript", flat_cache=False),
                                  "step 3: state output present.0.key, made by Add has shape [2, 1, 4, 16] from ONNX Runtime, [2, 1, 5, 16] from PyTorch",
                                  ""),
    # Single calls with a full mask cannot see it (parity passes on them); the first left-padded row does.
    "mask_ignored_in_export": (stateful_models.decoder_config("mask_ignored_in_export", "torchscript", flat_cache=False),
                               "step 0: graph fidelity, logits",
                               "the graph departs from the model first in `inner.lm.model.layers.0.self_attn.o_proj`"),
    "position_from_trace_length": (stateful_models.decoder_config("position_from_trace_length", "torchscript", flat_cache=False, positions=False),
                                   "step 0: graph fidelity, state output present.0.key",
                                   "in the model's own forward, after every aligned module agreed (PositionFromTraceLength"),
}  # fmt: skip


@pytest.mark.checks
@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_a_stateful_export_defect_is_blocked_at_the_step_where_it_shows(defect, tmp_path):
    text, first_block, departure = DEFECTS[defect]
    session = _session(text, tmp_path)
    assert session.artifact is not None, session.artifact_error
    result = session.check_rollout(full_rollout(session.config, session.batch_dim), root=HERE)
    assert not result
    assert result.blocks[0].startswith(first_block), result.blocks[0]
    assert departure in result.departure and bool(departure) == bool(result.departure), result.departure
    assert departure in str(result)


# Spike cases the smoke profile can draw, on which a correct export was blocked (7 of 108 stress
# cases of this size, both exporters): ONNX Runtime's GRU computes a saturated update gate as
# 3.5e-8, not 0, and multiplies it into the spiked state.
GRU_SPIKES = [
    InputCase("spikes", {"batch": 3}, seed=0, magnitude=1e4, spike_fraction=0.01),
    InputCase("spikes", {"batch": 1}, seed=5, magnitude=1e4, spike_fraction=0.01),
    InputCase("spikes", {"batch": 3}, seed=4, magnitude=1e3, spike_fraction=0.01),
]


@pytest.mark.checks
def test_a_correct_gru_export_passes_stress_inputs_where_onnx_runtimes_saturated_gates_differ(tmp_path):
    session = _session(stateful_models.gru_config("streaming_gru", "torchscript"), tmp_path)
    assert session.fidelity_judged
    assert session.check_fidelity(root=tmp_path), "the graph must be the model at the stress size first"
    for case in GRU_SPIKES:
        result = session.check_parity(case)
        assert result, str(result)
        assert any(finding.kind == "runtime" for finding in result.findings), str(result)
        assert "atol=1e-05" not in str(result), "the bound is taken at the inputs' scale"


@pytest.mark.checks
@pytest.mark.slow
def test_a_100_step_llama_rollout_stays_within_bounds_with_greedy_agreement(tmp_path):
    session = _session(stateful_models.decoder_config("tiny_llama", "torchscript", steps=100), tmp_path)
    result = session.check_rollout(full_rollout(session.config, session.batch_dim), report=True)
    assert result, str(result)
    assert result.steps == 100 and (result.greedy[0].first_difference is None or result.greedy[0].tie)


@pytest.mark.checks
def test_the_flat_cache_adapter_takes_the_inputs_the_config_declares_and_says_so_when_they_differ(tmp_path):
    without_positions = stateful_models.decoder_config("tiny_llama", "torchscript", positions=False)
    session = _session(without_positions, tmp_path / "default")
    assert session.artifact is None
    assert "takes ['input_ids', 'attention_mask', 'position_ids'] and then 4 cache tensors" in session.artifact_error
    assert "\n" not in session.artifact_error, session.artifact_error
    declared = without_positions.replace('model = "stateful_models:tiny_llama" }', 'model = "stateful_models:tiny_llama", inputs = ["input_ids", "attention_mask"] }')
    session = _session(declared, tmp_path / "declared")
    assert session.artifact is not None, session.artifact_error
    assert session.check_rollout(full_rollout(session.config, session.batch_dim))


# --- the gate ------------------------------------------------------------------------------------


def test_the_gate_rolls_out_a_streaming_model_and_reports_its_drift(project):
    shutil.copy(HERE / "stateful_models.py", project.path / "stateful_models.py")
    project.write_config(stateful_models.gru_config("streaming_gru", "%(exporter)s"))
    run = project.run()
    assert run.result.ret == 0, run.result.stdout.str()
    assert "rollout" in run.document["required_checks"] and run.status("rollout") == "passed"
    rollout = run.document["parity"]["rollout"]
    assert rollout["passed"] and rollout["steps"] == 32 and {d["output"] for d in rollout["drift"]} == {"logits", "h_next"}
    summary = (project.path / "reports" / run.document["run_id"] / "summary.md").read_text()
    assert "## Rollout parity (state fed back, call after call)" in summary
    assert "On 32 calls from uniform inputs (batch=2, seed=0): every step within bounds." in summary


def test_the_gate_blocks_a_cache_cut_at_the_trace_length_naming_the_step(project):
    shutil.copy(HERE / "stateful_models.py", project.path / "stateful_models.py")
    project.write_config(stateful_models.decoder_config("cache_cut_at_trace_length", "%(exporter)s", flat_cache=False))
    run = project.run("-k", "rollout")
    assert run.result.ret != 0 and run.status("rollout") == "failed"
    # The graph keeps the trace's 2 + 2 positions: every longer cache is cut to 4.
    assert "made by Add has shape [2, 1, 4, 16] from ONNX Runtime" in " ".join(run.document["checks"]["rollout"]["messages"])


def test_the_benchmarks_measure_per_token_latency_of_a_growing_cache_and_compare_reads_it(project):
    shutil.copy(HERE / "stateful_models.py", project.path / "stateful_models.py")
    project.write_config(stateful_models.decoder_config("tiny_llama", "%(exporter)s", past_high=160))
    run = project.run("--gate-bench-quick", "-k", "per_token", paths=(BENCHMARKS,))
    assert run.result.parseoutcomes().get("passed") == 4, run.result.stdout.str()
    assert run.status("latency_decode") == "passed"
    folder = project.path / "reports" / run.document["run_id"]
    section = json.loads((folder / "benchmark.json").read_text())["onnx_gate"]
    records = {r["key"]: r for r in section["decode_records"]}
    assert set(records) == {f"cpu/{backend}/batch1/{phase}@128" for backend in ("pytorch", "onnxruntime") for phase in ("prefill", "decode")}
    decode = records["cpu/onnxruntime/batch1/decode@128"]
    assert decode["extra"]["tokens"] == 16 and decode["extra"]["io_binding"] and len(decode["samples"]) == decode["rounds"]
    assert decode["throughput_per_s"] == pytest.approx(1 / decode["median"])  # tokens per second at batch 1
    assert "contexts [512, 2048] left out: past_sequence goes up to 160" in section["decode_note"]
    summary = (folder / "summary.md").read_text()
    assert "| context | prefill ms PyTorch | prefill ms ONNX Runtime | ms/token PyTorch |" in summary and "\n| 128 | " in summary
    run_bench = load_run(folder / "benchmark.json")
    assert "cpu/onnxruntime/batch1/decode@128" in run_bench.samples
    # compare judges the per-token speedup as a ratio of one run's alternating rounds, and says tokens/s.
    assert section["decode_speedups"]["cpu/batch1/decode@128"] == pytest.approx(
        records["cpu/pytorch/batch1/decode@128"]["median"] / decode["median"])
    comparison = compare(run_bench, run_bench, CompareSettings(floor=0.1, significance=0.05, latency_fails=False))
    assert "NO DETECTABLE CHANGE | speedup cpu/batch1/decode@128" in "\n".join(comparison.lines())
    tokens = f"{1 / decode['median']:.0f} -> {1 / decode['median']:.0f} tokens/s"
    assert any(str(effect).endswith(tokens) for effect in comparison.latencies), comparison.lines()
