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


def llama(seed: int = 0) -> nn.Module:
    """A Llama-style decoder: RMSNorm, rotary positions, grouped-query causal attention, SwiGLU."""
    from transformers import LlamaConfig, LlamaModel

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, use_cache=False, attn_implementation="eager",
    )  # fmt: skip
    return LlamaModel(config).eval()


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
