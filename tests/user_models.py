"""Models a user might gate, described by config only. Copied beside each test's gate config,
as a user's own module would sit beside their pyproject.toml."""

import torch
from torch import nn


class TwoInputNet(nn.Module):
    """A spectrogram patch and receiver coordinates in, one estimate out."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.receivers = nn.Linear(6, 8)
        self.head = nn.Linear(4 + 8, 2)

    def forward(self, spectrum: torch.Tensor, receivers: torch.Tensor) -> torch.Tensor:
        pooled = torch.relu(self.conv(spectrum)).mean(dim=(2, 3))
        return self.head(torch.cat([pooled, torch.tanh(self.receivers(receivers / 90.0))], dim=1))


class FrameNet(nn.Module):
    """A dynamic time axis: per-frame outputs follow it, pooled outputs do not."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(4, 8, 3, padding=1)
        self.per_frame = nn.Linear(8, 2)
        self.pooled = nn.Linear(8, 3)

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = nn.functional.gelu(self.conv(frames)).transpose(1, 2)
        return self.per_frame(hidden), self.pooled(hidden.mean(dim=1))


def two_input_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return TwoInputNet().eval()


def frame_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return FrameNet().eval()


def broken_factory() -> nn.Module:
    raise RuntimeError("this factory always fails")


class Float32OnlyNet(TwoInputNet):
    """Stands in for a model with an op that has no float64 kernel, as some custom ops lack."""

    def forward(self, spectrum: torch.Tensor, receivers: torch.Tensor) -> torch.Tensor:
        if spectrum.dtype == torch.float64:
            raise RuntimeError("\"custom_conv\" not implemented for 'Double'")
        return super().forward(spectrum, receivers)


def float32_only_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return Float32OnlyNet().eval()


class LogNet(nn.Module):
    """log of its input: NaN for every negative value, in PyTorch as in any runtime."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.log(x))


def log_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return LogNet().eval()


class DictNet(nn.Module):
    """Named outputs, in an order unlike the config's: {"b": [N, 3], "a": [N, 2]}."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 2)
        self.b = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"b": self.b(x), "a": self.a(x)}


def dict_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return DictNet().eval()


class NestedNet(DictNet):
    """Nested tuple outputs: (a, (b, a + 1))."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:  # type: ignore[override]
        a = self.a(x)
        return a, (self.b(x), a + 1)


def nested_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return NestedNet().eval()


class SaturatingNet(nn.Module):
    """Clamps its input before a squashing layer: the clamp only matters far outside [-1, 1]."""

    def __init__(self, clamp: bool = True) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.clamp = clamp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.clamp:
            x = torch.clamp(x, -5.0, 5.0)
        return torch.tanh(self.fc(x) / 5.0)


def saturating_net(seed: int = 0, clamp: bool = True) -> nn.Module:
    torch.manual_seed(seed)
    return SaturatingNet(clamp).eval()


class DataDependentNet(nn.Module):
    """Branches on a tensor's value, which torch.export cannot trace."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 2)

    def forward(self, receivers: torch.Tensor) -> torch.Tensor:
        if receivers.sum() > 0:
            return self.fc(receivers)
        return -self.fc(receivers)


def data_dependent_net() -> nn.Module:
    torch.manual_seed(0)
    return DataDependentNet().eval()


class ArgmaxTagger(nn.Module):
    """A tagger whose only output is discrete: int64 argmax tags per time step."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(16, 64), nn.GELU())
        self.head = nn.Linear(64, 12)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(features)).argmax(dim=-1)


def argmax_tagger(seed: int = 0, head_through_fp16: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    model = ArgmaxTagger().eval()
    if head_through_fp16:  # the defect: a tag head exported in half precision
        with torch.no_grad():
            for parameter in model.head.parameters():
                parameter.copy_(parameter.half().float())
    return model


class BoxesAndScores(nn.Module):
    """A YOLO-style head: one tensor of pixel box coordinates (0-640) and 0-1 class scores."""

    def __init__(self, scores_through_fp16: bool = False) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Linear(16, 64), nn.SiLU())
        self.boxes = nn.Linear(64, 4)
        self.scores = nn.Linear(64, 20)
        self.scores_through_fp16 = scores_through_fp16

    def forward(self, anchors: torch.Tensor) -> torch.Tensor:
        hidden = self.features(anchors)
        scores = torch.sigmoid(self.scores(hidden))
        if self.scores_through_fp16:  # the defect: the score branch ran in half precision
            scores = scores.half().float()
        return torch.cat([640 * torch.sigmoid(self.boxes(hidden)), scores], dim=-1)


def boxes_and_scores(seed: int = 0, scores_through_fp16: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    return BoxesAndScores(scores_through_fp16).eval()


class GroupNormUNet(nn.Module):
    """A small U-Net-style encoder/decoder with GroupNorm, on images of any height and width."""

    def __init__(self) -> None:
        super().__init__()
        self.down = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.GroupNorm(4, 16), nn.SiLU())
        # Stride 1 throughout, so that any height and width (odd ones too) round-trip.
        self.middle = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.GroupNorm(8, 32), nn.SiLU())
        self.up = nn.Sequential(nn.ConvTranspose2d(32, 16, 3, padding=1), nn.GroupNorm(4, 16), nn.SiLU())
        self.out = nn.Conv2d(32, 1, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        skip = self.down(image)
        return self.out(torch.cat([skip, self.up(self.middle(skip))], dim=1))


def group_norm_unet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return GroupNormUNet().eval()


class PaddedSequenceNet(nn.Module):
    """Per-step outputs over a padded sequence. Like PyTorch's fused fast paths, eager inference
    writes zeros at padded positions while the exported graph computes values there."""

    def __init__(self) -> None:
        super().__init__()
        self.step = nn.Linear(4, 2)

    def forward(self, tokens: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        steps = torch.tanh(self.step(tokens))
        valid = attention_mask.unsqueeze(-1).to(steps.dtype)
        if torch.onnx.is_in_onnx_export():
            return steps * (2.0 - valid)  # values at padded positions too
        return steps * valid


def padded_sequence_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return PaddedSequenceNet().eval()


class IgnoresReceiversNet(TwoInputNet):
    """A bad init: the receivers branch is gated by a weight that starts, and stayed, at zero. The
    graph reads the input; the outputs never depend on it."""

    def __init__(self) -> None:
        super().__init__()
        self.receiver_gate = nn.Parameter(torch.zeros(8))

    def forward(self, spectrum: torch.Tensor, receivers: torch.Tensor) -> torch.Tensor:
        pooled = torch.relu(self.conv(spectrum)).mean(dim=(2, 3))
        branch = torch.tanh(self.receivers(receivers / 90.0)) * self.receiver_gate
        return self.head(torch.cat([pooled, branch], dim=1))


def ignores_receivers_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return IgnoresReceiversNet().eval()


class WideMlp(nn.Module):
    """A plain MLP of 545 M parameters, 2.18 GB in float32: past protobuf's 2 GB, so both exporters
    write its weights to external data files (the slow tier, tests/test_large_model.py)."""

    def __init__(self, features: int = 1024, width: int = 8192, depth: int = 8, outputs: int = 16) -> None:
        super().__init__()
        sizes = [features, *[width] * (depth + 1)]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))
        self.head = nn.Linear(width, outputs)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        for layer in self.hidden:
            features = torch.tanh(layer(features))
        return self.head(features)


def wide_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = WideMlp()
    with torch.no_grad():
        for layer in [*model.hidden, model.head]:
            # Variance-preserving, so that 9 layers deep the outputs still carry signal.
            layer.weight.normal_(0.0, layer.in_features**-0.5)
            layer.bias.zero_()
    return model.eval()
