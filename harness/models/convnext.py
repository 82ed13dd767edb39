"""A ConvNeXt backbone in plain PyTorch (no torchvision, no timm).

Follows Liu et al., "A ConvNet for the 2020s" and timm's ``convnext.py``: a patchify stem, four
stages of depthwise-7x7 / inverted-bottleneck blocks with layer scale, and LayerNorm + stride-2
downsampling between stages. Variants are data, passed to one builder.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

# Real ConvNeXt widths for tiny/small/base/large; the smaller ones (timm's atto/femto/pico/nano
# and a "test" size) keep the harness's own tests fast.
CONVNEXT_VARIANTS: dict[str, dict[str, tuple[int, ...]]] = {
    "test": dict(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64)),
    "atto": dict(depths=(2, 2, 6, 2), dims=(40, 80, 160, 320)),
    "femto": dict(depths=(2, 2, 6, 2), dims=(48, 96, 192, 384)),
    "pico": dict(depths=(2, 2, 6, 2), dims=(64, 128, 256, 512)),
    "nano": dict(depths=(2, 2, 8, 2), dims=(80, 160, 320, 640)),
    "tiny": dict(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768)),
    "small": dict(depths=(3, 3, 27, 3), dims=(96, 192, 384, 768)),
    "base": dict(depths=(3, 3, 27, 3), dims=(128, 256, 512, 1024)),
    "large": dict(depths=(3, 3, 27, 3), dims=(192, 384, 768, 1536)),
}


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel axis of an NCHW tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int, layer_scale_init: float = 1e-6) -> None:
        super().__init__()
        self.conv_dw = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.mlp_fc1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.mlp_fc2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale_init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.conv_dw(x).permute(0, 2, 3, 1)
        x = self.mlp_fc2(self.act(self.mlp_fc1(self.norm(x))))
        return shortcut + (self.gamma * x).permute(0, 3, 1, 2)


class ConvNeXtStage(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, depth: int, downsample: bool) -> None:
        super().__init__()
        self.downsample = (
            nn.Sequential(LayerNorm2d(in_dim, eps=1e-6), nn.Conv2d(in_dim, out_dim, 2, stride=2))
            if downsample
            else nn.Identity()
        )
        self.blocks = nn.Sequential(*(ConvNeXtBlock(out_dim) for _ in range(depth)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class ConvNeXt(nn.Module):
    """Feature extractor: (N, C, H, W) -> (N, dims[-1]) after global average pooling."""

    def __init__(self, in_chans: int, depths: tuple[int, ...], dims: tuple[int, ...]) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, dims[0], kernel_size=4, stride=4), LayerNorm2d(dims[0], eps=1e-6)
        )
        in_dims = (dims[0], *dims[:-1])
        self.stages = nn.Sequential(
            *(
                ConvNeXtStage(in_dim, out_dim, depth, downsample=index > 0)
                for index, (in_dim, out_dim, depth) in enumerate(zip(in_dims, dims, depths))
            )
        )
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.num_features = dims[-1]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def convnext(variant: str, in_chans: int = 3) -> ConvNeXt:
    if variant not in CONVNEXT_VARIANTS:
        raise ValueError(
            f"unknown ConvNeXt size {variant!r}; valid sizes: {', '.join(CONVNEXT_VARIANTS)}"
        )
    return ConvNeXt(in_chans, **CONVNEXT_VARIANTS[variant])
