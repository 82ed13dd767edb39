"""Models that carry state across calls, for the rollout tests: transformers decoders with a KV
cache (small random configs, as the real-architecture suite uses), a streaming GRU with ``h`` in
and out, and defects of each class, each made the way it happens in real life: an export-time
wrapper or a Python int that tracing bakes into the graph, so PyTorch runs right and the graph
does not."""

from __future__ import annotations

import torch
from torch import nn

VOCAB = 64
HEAD_DIM = 16


def tiny_llama(kv_heads: int = 1) -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        num_hidden_layers=2, hidden_size=32, num_attention_heads=2, num_key_value_heads=kv_heads,
        intermediate_size=64, vocab_size=VOCAB, max_position_embeddings=256, bos_token_id=0, eos_token_id=1,
        pad_token_id=2,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


def tiny_gpt2() -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=VOCAB, n_positions=256, bos_token_id=0, eos_token_id=1)
    return GPT2LMHeadModel(config).eval()


def tiny_t5() -> nn.Module:
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    config = T5Config(
        vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=16, pad_token_id=0, decoder_start_token_id=0,
    )  # fmt: skip
    return T5ForConditionalGeneration(config).eval()


class StreamingGRU(nn.Module):
    """A streaming encoder: one frame per call, a two-layer GRU state ``h`` in and out."""

    def __init__(self, features: int = 16, hidden: int = 32, classes: int = 8) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.gru = nn.GRU(features, hidden, num_layers=2, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def step(self, frame: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out, h_next = self.gru(frame[:, None, :], h)
        return self.head(out[:, -1]), h_next

    def forward(self, frame: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.step(frame, h)


def streaming_gru() -> nn.Module:
    return StreamingGRU().eval()


class GRUStateFromWrongLayer(StreamingGRU):
    """The export wrapper returns the first layer's state for both layers: one call's logits are
    right (they come from ``out``), the next call starts the second layer from the wrong state."""

    def forward(self, frame: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, h_next = self.step(frame, h)
        if torch.onnx.is_in_onnx_export():
            h_next = torch.stack([h_next[0], h_next[0]])
        return logits, h_next


class GRUStateIgnored(StreamingGRU):
    """The export wrapper starts every call from a fresh zero state, as a wrapper that builds ``h``
    inside ``forward`` does: the graph ignores its state input."""

    def forward(self, frame: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if torch.onnx.is_in_onnx_export():
            h = h * 0
        return self.step(frame, h)


def gru_state_from_wrong_layer() -> nn.Module:
    return GRUStateFromWrongLayer().eval()


def gru_state_ignored() -> nn.Module:
    return GRUStateIgnored().eval()


class CacheCutAtTraceLength(nn.Module):
    """A flat-cache Llama whose wrapper keeps "the last ``past + new`` positions" of the cache with
    a Python int: a no-op in PyTorch, but tracing bakes the trace's length into the graph, which
    then cuts every longer cache to it."""

    def __init__(self) -> None:
        super().__init__()
        from harness.models.decoder import FlatCacheLM

        self.inner = FlatCacheLM(tiny_llama(), 2)

    def forward(self, input_ids, attention_mask, position_ids, *past):  # type: ignore[no-untyped-def]
        logits, *present = self.inner(input_ids, attention_mask, position_ids, *past)
        keep = int(past[0].shape[2]) + int(input_ids.shape[1])
        return (logits, *(t[:, :, -keep:] for t in present))


class PositionFromTraceLength(nn.Module):
    """A flat-cache Llama that computes its positions from the cache's length, as GPT-2-era export
    code did, with a Python int: right in PyTorch, and fixed at the trace's offset in the graph,
    so the rotary embedding of every later token is applied at the wrong position."""

    def __init__(self) -> None:
        super().__init__()
        from harness.models.decoder import FlatCacheLM

        self.inner = FlatCacheLM(tiny_llama(), 2)

    def forward(self, input_ids, attention_mask, *past):  # type: ignore[no-untyped-def]
        offset = int(past[0].shape[2])
        positions = torch.ones_like(input_ids).cumsum(-1) - 1 + offset
        return self.inner(input_ids, attention_mask, positions, *past)


class MaskIgnoredInExport(nn.Module):
    """A flat-cache Llama whose export wrapper marks every position valid ("the model gets a full
    mask anyway"): left padding and the cache's padded slots are attended to in the graph only."""

    def __init__(self) -> None:
        super().__init__()
        from harness.models.decoder import FlatCacheLM

        self.inner = FlatCacheLM(tiny_llama(), 2)

    def forward(self, input_ids, attention_mask, position_ids, *past):  # type: ignore[no-untyped-def]
        if torch.onnx.is_in_onnx_export():
            attention_mask = torch.ones_like(attention_mask)
        return self.inner(input_ids, attention_mask, position_ids, *past)


def mask_ignored_in_export() -> nn.Module:
    return MaskIgnoredInExport().eval()


def cache_cut_at_trace_length() -> nn.Module:
    return CacheCutAtTraceLength().eval()


def position_from_trace_length() -> nn.Module:
    return PositionFromTraceLength().eval()


# The gate configs a user would write for these models (``model`` relative to this folder).
GRU = """
model = "stateful_models:%(model)s"
exporter = "%(exporter)s"
outputs = ["logits"]

[[inputs]]
name = "frame"
shape = ["batch", 16]
range = [-1.0, 1.0]
dims = { batch = [1, 4] }

[[state]]
input = "h"
output = "h_next"
shape = [2, "batch", 32]
range = [-1.0, 1.0]

[rollout]
steps = %(steps)d
examples = 2
feed = { frame = "next" }

[publish]
model_name = "streaming-gru"
"""

DECODER = """
model = "%(model)s"
model_kwargs = %(model_kwargs)s
exporter = "%(exporter)s"
outputs = ["logits"]

[[inputs]]
name = "input_ids"
shape = ["batch", "sequence"]
dtype = "int64"
range = [0, 63]
dims = { batch = [1, 3], sequence = [1, 6] }

[[inputs]]
name = "attention_mask"
shape = ["batch", "past_sequence + sequence"]
dtype = "int64"
range = [1, 1]
%(position_ids)s
[[state]]
input = "past_key_values.{i}.key"
output = "present.{i}.key"
layers = 2
shape = ["batch", %(kv_heads)d, "past_sequence", 16]
dims = { past_sequence = [%(past_low)d, %(past_high)d] }
grows = "past_sequence"

[[state]]
input = "past_key_values.{i}.value"
output = "present.{i}.value"
layers = 2
shape = ["batch", %(kv_heads)d, "past_sequence", 16]
grows = "past_sequence"

[rollout]
steps = %(steps)d
examples = 2
feed = { input_ids = "argmax(logits)", attention_mask = "extend"%(position_feed)s }

[publish]
model_name = "tiny-decoder-kv"
"""

POSITION_IDS = """
[[inputs]]
name = "position_ids"
shape = ["batch", "sequence"]
dtype = "int64"
range = [0, 127]
"""


def decoder_config(
    model: str, exporter: str, *, steps: int = 16, flat_cache: bool = True, positions: bool = True, past_low: int = 0,
    past_high: int = 48,
) -> str:
    """A decoder's config: ``model`` through the flat-cache adapter (a transformers builder) or as it is."""
    kv_heads = 2 if "gpt2" in model else 1
    return DECODER % {
        "model": "harness.models.decoder:with_flat_cache" if flat_cache else f"stateful_models:{model}",
        "model_kwargs": f'{{ model = "stateful_models:{model}" }}' if flat_cache else "{}",
        "exporter": exporter, "steps": steps, "kv_heads": kv_heads, "past_low": past_low, "past_high": past_high,
        "position_ids": POSITION_IDS if positions else "",
        "position_feed": ', position_ids = "advance"' if positions else "",
    }  # fmt: skip


def gru_config(model: str, exporter: str, *, steps: int = 32) -> str:
    return GRU % {"model": model, "exporter": exporter, "steps": steps}


SEQ2SEQ = """
model = "harness.models.decoder:seq2seq_with_flat_cache"
model_kwargs = { model = "stateful_models:%(model)s" }
exporter = "%(exporter)s"
outputs = ["logits"]

[[inputs]]
name = "decoder_input_ids"
shape = ["batch", "sequence"]
dtype = "int64"
range = [0, 63]
dims = { batch = [1, 3], sequence = [1, 6] }

[[inputs]]
name = "encoder_hidden_states"
shape = ["batch", "source", 32]
range = [-1.0, 1.0]
dims = { source = [1, 12] }

[[inputs]]
name = "encoder_attention_mask"
shape = ["batch", "source"]
dtype = "int64"
range = [1, 1]

[[state]]
input = "past_key_values.{i}.key"
output = "present.{i}.key"
layers = 2
shape = ["batch", 4, "past_sequence", 8]
dims = { past_sequence = [0, 48] }
grows = "past_sequence"

[[state]]
input = "past_key_values.{i}.value"
output = "present.{i}.value"
layers = 2
shape = ["batch", 4, "past_sequence", 8]
grows = "past_sequence"

[rollout]
steps = %(steps)d
examples = 2
feed = { decoder_input_ids = "argmax(logits)", encoder_hidden_states = "same", encoder_attention_mask = "same" }

[publish]
model_name = "tiny-seq2seq-kv"
"""


def seq2seq_config(model: str, exporter: str, *, steps: int = 16) -> str:
    return SEQ2SEQ % {"model": model, "exporter": exporter, "steps": steps}


# Trained weights (tests/trained_models.py): Resemblyzer's 3-layer LSTM speaker encoder as a stream.
STREAMING_SPEAKER = """
model = "trained_models:streaming_speaker_encoder"
exporter = "%(exporter)s"
outputs = ["embedding"]

[[inputs]]
name = "mel_frame"
shape = ["batch", 40]
range = [0.0, 4.0]
dims = { batch = [1, 4] }

[[state]]
input = "h"
output = "h_next"
shape = [3, "batch", 256]
range = [-1.0, 1.0]

[[state]]
input = "c"
output = "c_next"
shape = [3, "batch", 256]
range = [-4.0, 4.0]

[rollout]
steps = 50
examples = 2
feed = { mel_frame = "next" }

[publish]
model_name = "streaming-speaker-encoder"
"""
