"""Real architectures from widely used libraries, at small random-initialised sizes.

transformers builds each from a config with no download; PyTorch's own LSTM stands in for the
recurrent family. The gate sees them exactly as a user's model: a ``module:callable`` in a TOML
config. Each init is seeded, and BatchNorm statistics and layer scales are set away from the
identity values that would hide a layer from a parity check.
"""

from __future__ import annotations

import torch
from torch import nn


def _realistic_(model: nn.Module, seed: int) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.normal_(0.0, 0.2, generator=generator)
                module.running_var.uniform_(0.5, 2.0, generator=generator)
    return model.eval()


def bert(seed: int = 0) -> nn.Module:
    """Attention over integer token ids with an attention mask."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, attn_implementation="eager",
    )  # fmt: skip
    return BertModel(config).eval()


def vit(seed: int = 0) -> nn.Module:
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(seed)
    config = ViTConfig(
        image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=64, attn_implementation="eager",
    )  # fmt: skip
    return ViTModel(config).eval()


def mobilenet_v2(seed: int = 0) -> nn.Module:
    """Depthwise convolutions with TensorFlow-style padding, which reads each convolution's stride."""
    from transformers import MobileNetV2Config, MobileNetV2Model

    torch.manual_seed(seed)
    config = MobileNetV2Config(image_size=32, depth_multiplier=0.35, tf_padding=True)
    return _realistic_(MobileNetV2Model(config), seed)


def resnet(seed: int = 0) -> nn.Module:
    """A CNN with BatchNorm."""
    from transformers import ResNetConfig, ResNetModel

    torch.manual_seed(seed)
    config = ResNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], layer_type="basic")
    return _realistic_(ResNetModel(config), seed)


def convnext(seed: int = 0) -> nn.Module:
    from transformers import ConvNextConfig, ConvNextModel

    torch.manual_seed(seed)
    # A layer scale of 1e-6 (the default) would hide every block from a parity check.
    config = ConvNextConfig(num_stages=2, hidden_sizes=[16, 32], depths=[1, 1], layer_scale_init_value=0.5)
    return ConvNextModel(config).eval()


def wav2vec2(seed: int = 0) -> nn.Module:
    """A speech encoder on raw audio with a dynamic time axis; GroupNorm normalises over time."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(seed)
    config = Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(16, 16), conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2, feat_extract_norm="group", attn_implementation="eager",
    )  # fmt: skip
    return Wav2Vec2Model(config).eval()


class SequenceTagger(nn.Module):
    """A recurrent model: a two-layer LSTM over a dynamic time axis, per-step and final outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_size=8, hidden_size=16, num_layers=2, batch_first=True)
        self.head = nn.Linear(16, 4)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sequence, (hidden, _) = self.lstm(features)
        return self.head(sequence), hidden[-1]


def lstm(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return SequenceTagger().eval()


def llama(seed: int = 0) -> nn.Module:
    """A causal decoder (Llama-style: RoPE, RMSNorm, SwiGLU, grouped KV heads) over token ids with
    an attention mask, padded on either side; PyTorch's SDPA, as users run it."""
    from transformers import LlamaConfig, LlamaModel

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0, attn_implementation="sdpa",
    )  # fmt: skip
    return LlamaModel(config).eval()


def t5_encoder(seed: int = 0) -> nn.Module:
    """An encoder with T5's bucketed relative position bias and an attention mask."""
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=100, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=16, pad_token_id=0,
    )  # fmt: skip
    return T5EncoderModel(config).eval()


def clip_vision(seed: int = 0) -> nn.Module:
    """A vision transformer fed normalised images, whose range is not symmetric: [-2.1, 2.6]."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(seed)
    config = CLIPVisionConfig(
        image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, attn_implementation="eager",
    )  # fmt: skip
    return CLIPVisionModel(config).eval()


class LengthsEncoder(nn.Module):
    """nn.TransformerEncoder over frames, its padding mask built from a ``lengths`` input; the
    fused fast path (nested tensors) runs in PyTorch inference, as users run it."""

    def __init__(self) -> None:
        super().__init__()
        self.project = nn.Linear(8, 32)
        layer = nn.TransformerEncoderLayer(d_model=32, nhead=4, dim_feedforward=64, batch_first=True, dropout=0.0)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=True)
        self.head = nn.Linear(32, 4)

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        positions = torch.arange(frames.shape[1], device=frames.device)
        padding = positions[None, :] >= lengths[:, None]
        encoded = self.encoder(self.project(frames), src_key_padding_mask=padding)
        valid = (~padding).unsqueeze(-1).to(encoded.dtype)
        pooled = (encoded * valid).sum(dim=1) / valid.sum(dim=1)
        return self.head(encoded), self.head(pooled)


def lengths_encoder(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return LengthsEncoder().eval()


class AttentionPooling(nn.Module):
    """nn.MultiheadAttention pooling a sequence with a bool key padding mask (True = padding)."""

    def __init__(self) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.randn(1, 1, 16))
        self.attention = nn.MultiheadAttention(16, num_heads=2, batch_first=True)
        self.head = nn.Linear(16, 3)

    def forward(self, tokens: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        query = self.query.expand(tokens.shape[0], -1, -1)
        pooled, _ = self.attention(query, tokens, tokens, key_padding_mask=padding, need_weights=False)
        return self.head(pooled[:, 0])


def attention_pooling(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return AttentionPooling().eval()


class FrameEncoder(nn.Module):
    """An audio front end: each frame of raw samples, with a gain, normalised by LayerNorm
    (eps 1e-5), then a small per-frame head and a pooled summary."""

    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__()
        self.gain = 30.0
        self.norm = nn.LayerNorm(64, eps=eps)
        self.head = nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 8))

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        per_frame = self.head(self.norm(frames * self.gain))
        return per_frame, per_frame.mean(dim=1)


def frame_encoder(seed: int = 0, eps: float = 1e-5) -> nn.Module:
    torch.manual_seed(seed)
    model = FrameEncoder(eps)
    with torch.no_grad():  # an affine LayerNorm away from the identity, as after training
        model.norm.weight.uniform_(0.5, 1.5)
        model.norm.bias.uniform_(-0.2, 0.2)
    return model.eval()
