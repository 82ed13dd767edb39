"""Never export an unchanged model twice: exported artifacts cached across sessions.

An entry is keyed on everything that can change the exported bytes: the source files of the
model's classes and factory, the harness's model and export code, the weights (every parameter
and buffer, byte for byte), the config parts the export reads, the exporter and opset, and the
library versions. It holds the file exactly as ``export_onnx`` wrote it, with its sha256 beside
it; an entry whose file no longer has that digest (modified, truncated) is discarded and the
model exported again, never used.

The cache lives outside the repository: ``$ONNX_GATE_CACHE_DIR``, else
``$XDG_CACHE_HOME/onnx-gate``, else ``~/.cache/onnx-gate``.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from harness.runtime.export import file_sha256

if TYPE_CHECKING:
    from torch import nn

    from harness.core.config import GateConfig

# Bump when what an entry holds, or what the key covers, changes: old entries then never match.
CACHE_FORMAT = 2  # 2: exports without fused attention fast paths, masks in the trace inputs
CACHE_DIR_ENV = "ONNX_GATE_CACHE_DIR"
KEEP_ENTRIES = 8  # newest used first; each entry holds one model file
FILE_NAME = "model.onnx"
HARNESS = Path(__file__).resolve().parents[1]
# The harness code that decides the exported bytes, besides the model's own source.
EXPORT_CODE = ("runtime/export.py", "runtime/provenance.py", "runtime/runners.py", "core/model_loader.py", "models")
# The config parts the export reads (config.summary() keys); tolerances, invariants do not enter it.
EXPORT_CONFIG = ("model", "model_kwargs", "inputs", "outputs", "dims", "exporter", "opset")


def cache_dir() -> Path:
    """Where entries live: $ONNX_GATE_CACHE_DIR, else $XDG_CACHE_HOME/onnx-gate, else ~/.cache/onnx-gate."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "onnx-gate"


@dataclass(frozen=True)
class CacheOutcome:
    """Where this session's artifact came from, for the report."""

    status: str  # "hit", "miss" (exported, now cached), "refreshed" (--gate-no-cache), "off"
    key: str | None = None
    reason: str = ""
    original_export_seconds: float | None = None  # of the export a hit reuses

    @property
    def from_cache(self) -> bool:
        return self.status == "hit"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "from_cache": self.from_cache}

    def __str__(self) -> str:
        text = {
            "hit": "reused from the export cache",
            "miss": "exported (not cached before; now cached)",
            "refreshed": "exported (--gate-no-cache; cache entry refreshed)",
            "off": "exported (cache off)",
        }[self.status]
        return text + (f": {self.reason}" if self.reason else "")


def _source_files(model: nn.Module, config: GateConfig) -> list[Path]:
    """The model's classes' files, its factory's module and the harness's export code."""
    import importlib

    files: set[Path] = set()
    for module in model.modules():
        for cls in type(module).__mro__:
            if cls.__module__.startswith(("torch.", "builtins")) or cls is object:
                continue  # torch's own code is keyed by torch's version
            source = inspect.getsourcefile(cls)
            if source is None:
                raise TypeError(f"class {cls.__qualname__} has no source file")
            files.add(Path(source).resolve())
    factory_module = importlib.import_module(config.model.partition(":")[0])
    source = inspect.getsourcefile(factory_module)
    if source is None:
        raise TypeError(f"module {factory_module.__name__} has no source file")
    files.add(Path(source).resolve())
    for name in EXPORT_CODE:
        path = HARNESS / name
        if not path.exists():  # a moved module would silently drop out of the key
            raise FileNotFoundError(f"the export code {path} the cache key covers is missing")
        files.update(path.rglob("*.py") if path.is_dir() else [path])
    return sorted(files)


def _weights_digest(model: nn.Module) -> str:
    """sha256 over every parameter and buffer (non-persistent ones too): name, dtype, shape, bytes."""
    import torch

    digest = hashlib.sha256()
    tensors = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    for name, tensor in tensors:
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}|".encode())
        if flat.numel():
            digest.update(flat.view(torch.uint8).numpy())  # the tensor's own memory, not a bytes copy
    return digest.hexdigest()


def _versions() -> dict[str, str]:
    from importlib import metadata

    versions = {"python": ".".join(map(str, sys.version_info[:3]))}
    for package in ("torch", "onnx", "onnxscript"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "absent"
    return versions


def export_key(model: nn.Module, config: GateConfig) -> tuple[str, dict[str, Any]]:
    """The cache key for exporting ``model`` as ``config`` says, and what it was computed from.
    Raises TypeError for a model whose source cannot be found (defined in a notebook, say)."""
    summary = config.summary()
    sources = _source_files(model, config)
    material = {
        "format": CACHE_FORMAT,
        "config": {k: summary[k] for k in EXPORT_CONFIG},
        "versions": _versions(),
        "weights": _weights_digest(model),
        "sources": {str(path): hashlib.sha256(path.read_bytes()).hexdigest() for path in sources},
    }
    blob = json.dumps(material, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:32], material


class ExportCache:
    """One folder per key holding ``model.onnx``, ``model.onnx.sha256`` and ``entry.json``."""

    def __init__(self, root: Path | None = None, *, keep: int = KEEP_ENTRIES) -> None:
        self.root = root or cache_dir()
        self.keep = keep

    def restore(self, key: str, target: Path) -> tuple[bool, str, dict[str, Any]]:
        """Copy the entry's file to ``target`` when it is intact: (restored, why not, entry info)."""
        entry = self.root / key
        if not entry.is_dir():
            return False, "", {}
        try:
            expected = (entry / f"{FILE_NAME}.sha256").read_text().split()[0]
            info = json.loads((entry / "entry.json").read_text())
            shutil.copyfile(entry / FILE_NAME, target)
        except (OSError, ValueError, IndexError) as exc:
            self._discard(entry)
            return False, f"cache entry {key} unreadable ({type(exc).__name__}); discarded", {}
        if file_sha256(target) != expected:
            target.unlink(missing_ok=True)
            self._discard(entry)
            return False, f"cache entry {key} was modified or truncated (sha256 mismatch); discarded", {}
        os.utime(entry)  # most recently used
        return True, "", info

    def store(self, key: str, source: Path, info: dict[str, Any]) -> None:
        """Add ``source`` under ``key`` atomically: a reader sees the whole entry or none."""
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=self.root))
        try:
            shutil.copyfile(source, staging / FILE_NAME)
            (staging / f"{FILE_NAME}.sha256").write_text(f"{file_sha256(staging / FILE_NAME)}  {FILE_NAME}\n")
            entry = json.dumps({**info, "stored": time.time()}, indent=2, default=str)
            (staging / "entry.json").write_text(entry)
            self._discard(self.root / key)
            staging.rename(self.root / key)
        except OSError:
            pass  # another session stored the same key first, or the disk is full: no cache, no harm
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self._prune()

    def _discard(self, entry: Path) -> None:
        shutil.rmtree(entry, ignore_errors=True)

    def _prune(self) -> None:
        entries = sorted((p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                         key=lambda p: p.stat().st_mtime, reverse=True)  # fmt: skip
        for entry in entries[self.keep:]:
            self._discard(entry)


def cached_export(
    model: nn.Module,
    config: GateConfig,
    path: Path,
    export: Callable[[nn.Module, GateConfig, Path], float],
    *,
    use_cache: bool = True,
) -> tuple[float, CacheOutcome]:
    """``export(model, config, path)`` unless an intact entry for the same key exists, in which
    case its bytes are copied to ``path``. Returns the export's seconds (0 on a hit) and where
    the file came from. Export errors propagate and nothing is cached."""
    cache = ExportCache()
    try:
        key, material = export_key(model, config)
    except (TypeError, OSError) as exc:
        seconds = export(model, config, path)
        return seconds, CacheOutcome("off", reason=f"no cache key for this model: {exc}")
    reason = ""
    if use_cache:
        restored, reason, info = cache.restore(key, path)
        if restored:
            return 0.0, CacheOutcome("hit", key, original_export_seconds=info.get("export_seconds"))
    seconds = export(model, config, path)
    extra = sorted(p.name for p in path.parent.iterdir() if p != path)
    if extra:  # external data files (a model of 2 GB and more)
        reason = (f"not cached: the export keeps its weights in {len(extra)} external data file(s) ({', '.join(extra[:3])}"
                  f"{', ...' if len(extra) > 3 else ''}); the cache holds single-file exports only, as "
                  f"{KEEP_ENTRIES} entries of several GB each would fill the disk")
        return seconds, CacheOutcome("off", key, reason=reason)
    cache.store(key, path, {"key": key, "export_seconds": round(seconds, 3), "material": material})
    return seconds, CacheOutcome("miss" if use_cache else "refreshed", key, reason)
