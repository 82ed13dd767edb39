"""Heimdall's LocalizationNet: mel-spectrogram in, position and its uncertainty out.

Input ``mel_spectrogram`` (batch, 3, 128, 32): I, Q and magnitude channels, 128 mel bins x 32
frames. A ConvNeXt backbone with global average pooling feeds two MLP heads:

* ``positions`` (batch, 2): lat, lon.
* ``uncertainties`` (batch, 2): sigma_x, sigma_y = clamp(softplus(head), 0.01, 1.0).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from harness.models.convnext import ConvNeXt, ConvNeXtBlock, convnext

UNCERTAINTY_MIN = 0.01
UNCERTAINTY_MAX = 1.0
DEFAULT_SEED = 20251022


def _head(in_features: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_features, 128),
        nn.BatchNorm1d(128),
        nn.ReLU(),
        nn.Dropout(0.3),
        nn.Linear(128, 64),
        nn.BatchNorm1d(64),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(64, 2),
    )


class LocalizationNet(nn.Module):
    def __init__(self, size: str = "tiny", in_chans: int = 3) -> None:
        super().__init__()
        self.backbone: ConvNeXt = convnext(size, in_chans)
        self.position_head = _head(self.backbone.num_features)
        self.uncertainty_head = _head(self.backbone.num_features)

    def forward(self, mel_spectrogram: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.backbone(mel_spectrogram)
        positions = self.position_head(features)
        uncertainties = F.softplus(self.uncertainty_head(features))
        return positions, torch.clamp(uncertainties, UNCERTAINTY_MIN, UNCERTAINTY_MAX)

    def get_params_count(self) -> dict[str, int]:
        total = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return {"total": total, "trainable": trainable, "frozen": total - trainable}


@torch.no_grad()
def seeded_init_(model: nn.Module, seed: int = DEFAULT_SEED) -> nn.Module:
    """Give every layer weights that a parity check can see, reproducibly from ``seed``.

    A training-time init hides export defects: ConvNeXt's layer scale of 1e-6 makes each residual
    block invisible at the output, and BatchNorm statistics of 0/1 make the heads' normalisation
    an identity that a wrong epsilon or a dropped BatchNorm would not change. So, drawn from one
    ``torch.Generator``:

    * Conv and Linear weights ~ N(0, 1/fan_in), biases ~ U(-0.1, 0.1): activations stay O(1).
    * Layer scale gamma ~ U(0.2, 1.0): every block contributes to the output.
    * LayerNorm weight ~ U(0.75, 1.25), bias ~ N(0, 0.05).
    * BatchNorm weight ~ U(0.75, 1.25), bias ~ N(0, 0.1), running mean ~ N(0, 0.2),
      running var ~ U(0.5, 2.0): the heads' normalisation is not an identity.
    * The uncertainty head's last bias is shifted by -1 so that most uncertainties fall inside
      the (0.01, 1.0) clamp instead of on its bounds, where any export would agree.
    """
    generator = torch.Generator().manual_seed(seed)

    def uniform(tensor: torch.Tensor, low: float, high: float) -> None:
        tensor.copy_(torch.rand(tensor.shape, generator=generator) * (high - low) + low)

    def normal(tensor: torch.Tensor, std: float) -> None:
        tensor.copy_(torch.randn(tensor.shape, generator=generator) * std)

    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            fan_in = module.weight[0].numel()
            normal(module.weight, 1.0 / math.sqrt(fan_in))
            if module.bias is not None:
                uniform(module.bias, -0.1, 0.1)
        elif isinstance(module, nn.LayerNorm):
            uniform(module.weight, 0.75, 1.25)
            normal(module.bias, 0.05)
        elif isinstance(module, nn.BatchNorm1d):
            uniform(module.weight, 0.75, 1.25)
            normal(module.bias, 0.1)
            normal(module.running_mean, 0.2)
            uniform(module.running_var, 0.5, 2.0)
        if isinstance(module, ConvNeXtBlock):
            uniform(module.gamma, 0.2, 1.0)
    if isinstance(model, LocalizationNet):
        model.uncertainty_head[-1].bias -= 1.0
    return model


def localization_net(size: str = "tiny", seed: int = DEFAULT_SEED) -> LocalizationNet:
    """The gate's default model: LocalizationNet of ``size`` with the documented seeded init."""
    return seeded_init_(LocalizationNet(size), seed).eval()
