"""Known, harmless library chatter, dropped from the gate's output; everything else still shows."""

from __future__ import annotations

import logging

# torch.onnx's op registry logs one warning per torchvision op when torchvision is absent (four per
# run). The gate exports no torchvision op and must not depend on torchvision (it does not import
# beside the CPU torch wheel), so the lines only bury the warnings that matter.
NOISE: dict[str, tuple[str, ...]] = {
    "torch.onnx._internal.exporter._registration": ("torchvision is not installed. Skipping torchvision::",),
}


class DropMessages(logging.Filter):
    """Drops a logger's records whose message starts with one of ``prefixes``."""

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)


def quiet_library_noise() -> None:
    """Install the filters; safe to call more than once, and before the libraries are imported
    (a logger is the same object whether torch or this module asks for it first)."""
    for name, prefixes in NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropMessages) for f in logger.filters):
            logger.addFilter(DropMessages(prefixes))
