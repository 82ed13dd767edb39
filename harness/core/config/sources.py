"""Where settings come from, later ones winning: built-in defaults (Heimdall's LocalizationNet),
``[tool.onnx-gate]`` in the nearest pyproject.toml, a TOML file given with ``--gate-config``,
command-line options (the option table below) and, from a training script, ``config_overrides``."""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from harness.core.config.schema import DEFAULT_MODEL, LOCALIZATION_NET_SECTION, GateConfig
from harness.core.config.validate import TOP_KEYS, check_keys, expect, parse, resolve_path
from harness.core.errors import ConfigError

# The config keys a command-line option overrides (pytest's --gate-* options, `onnx-gate debug`):
# option -> (config key, metavar).
OVERRIDE_OPTIONS = {
    "--gate-model": ("model", "MODULE:CALLABLE"), "--gate-checkpoint": ("checkpoint", "FILE"),
    "--gate-onnx": ("onnx", "FILE"), "--gate-exporter": ("exporter", "NAME"), "--gate-opset": ("opset", "N"),
    "--gate-report-dir": ("report_dir", "DIR"),
}  # fmt: skip


def read_toml_section(path: Path) -> dict[str, Any]:
    """The gate section of a TOML file: ``[tool.onnx-gate]`` if present, else the whole file."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from None
    tool = document.get("tool", {})
    if isinstance(tool, dict) and "onnx-gate" in tool:
        return expect(tool["onnx-gate"], dict, f"[tool.onnx-gate] in {path.name}")
    _refuse_near_miss_tables(document, path)
    if path.name == "pyproject.toml":
        return {}
    return document


def _is_near_miss(name: str) -> bool:
    normal = name.lower().replace("_", "-").replace(".", "-")
    return name != "onnx-gate" and (normal in ("onnx-gate", "onnxgate") or bool(
        difflib.get_close_matches(normal, ["onnx-gate"], n=1, cutoff=0.8)
    ))  # fmt: skip


def _refuse_near_miss_tables(document: Mapping[str, Any], path: Path) -> None:
    """``[tool.onnx_gate]`` and the like would otherwise be ignored without a word, and the gate
    would check some other model than the one the table describes."""
    tool = document.get("tool", {})
    for name in tool if isinstance(tool, dict) else ():
        if _is_near_miss(name):
            raise ConfigError(f"{path.name} has a [tool.{name}] table. Did you mean [tool.onnx-gate]?")
    for name in document:
        if name.lower().replace("_", "-") in ("onnx-gate", "onnxgate", "tool-onnx-gate"):
            raise ConfigError(
                f"{path.name} has a [{name}] table. Did you mean [tool.onnx-gate], or the keys at the top level?"
            )


def find_pyproject(start: Path) -> Path | None:
    """The nearest pyproject.toml with a ``[tool.onnx-gate]`` table, from ``start`` upwards."""
    for directory in (start, *start.parents):
        candidate = directory / "pyproject.toml"
        if candidate.is_file() and read_toml_section(candidate):
            return candidate
    return None


def _anchor_sample_paths(samples: str | list[Any], base_dir: Path) -> str | list[Any]:
    """Sample files (globs too) written in a layer resolve against that layer's folder."""
    if isinstance(samples, str) and ":" in samples and not samples.endswith(".npz"):
        return samples  # a callable
    entries = [samples] if isinstance(samples, str) else samples
    return [str(base_dir / e) if isinstance(e, str) and not Path(e).expanduser().is_absolute() else e for e in entries]


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key != "model_kwargs":
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


# Settings of the gate run rather than of a model: the only keys a layer describing one model
# may lend to a session gating another.
SESSION_KEYS = {"report_dir"}


@dataclass(frozen=True)
class Layer:
    """One source of settings, in precedence order: pyproject.toml < --gate-config file <
    command line < Python API."""

    source: str
    section: Mapping[str, Any]
    base_dir: Path
    from_file: bool = True
    must_name_model: bool = False

    @property
    def model(self) -> str | None:
        return self.section.get("model")


def _display(path: Path, invocation_dir: Path) -> str:
    """A path as a user reads it, relative to where they ran the gate when it lies below: reports
    and MLflow params carry no absolute path of the build machine."""
    try:
        return str(path.resolve().relative_to(invocation_dir.resolve()))
    except ValueError:
        return path.name


def _file_layers(invocation_dir: Path, config_file: Path | None) -> list[Layer]:
    layers = []
    pyproject = find_pyproject(invocation_dir)
    if pyproject:
        layers.append(Layer(
            f"{_display(pyproject, invocation_dir)} [tool.onnx-gate]", read_toml_section(pyproject), pyproject.parent,
        ))  # fmt: skip
    if config_file is not None:
        config_file = config_file if config_file.is_absolute() else invocation_dir / config_file
        if config_file.is_dir():
            raise ConfigError(f"--gate-config {str(config_file)!r} is a folder; give the TOML file in it")
        layers.append(Layer(
            _display(config_file, invocation_dir), read_toml_section(config_file), config_file.parent,
            must_name_model=True,
        ))  # fmt: skip
    return layers


def load(
    *,
    invocation_dir: Path,
    config_file: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    api_overrides: Mapping[str, Any] | None = None,
    model_object: bool = False,
    object_class: str | None = None,
) -> GateConfig:
    """Layer pyproject.toml, ``config_file``, ``overrides`` (the command line) and
    ``api_overrides`` (the Python API), later ones winning, into a GateConfig.

    A model's description never crosses to another model: a layer that names a model other than
    the one the highest model-naming layer names lends only the run's own settings (report_dir).
    A config file given with --gate-config must name its model; so must pyproject.toml's table
    unless a later layer does. With no layer at all, the built-in LocalizationNet is gated.
    Paths in a file resolve against that file's folder; paths in overrides against
    ``invocation_dir``. ``model_object``: the Python API was handed the model itself.

    ``object_class``: that object's class as ``module:QualName``, when it is not the built-in
    default's class. A model object is its own model: the built-in LocalizationNet's description
    (inputs, outputs, invariants) describes an instance of LocalizationNet, or any object when a
    layer names the default model. Any other object is described by the layers alone, and is
    labelled by its class where no layer names a model.
    """
    layers = _file_layers(invocation_dir, config_file)
    if overrides:
        layers.append(Layer("command line", dict(overrides), invocation_dir, from_file=False))
    if api_overrides:
        layers.append(Layer("Python API", dict(api_overrides), invocation_dir, from_file=False))
    for layer in layers:
        table = " [tool.onnx-gate]"
        where = f"[tool.onnx-gate] of {layer.source.removesuffix(table)}" if layer.source.endswith(table) else layer.source
        check_keys(layer.section, TOP_KEYS, where)
        if layer.must_name_model and not layer.model:
            raise ConfigError(
                f"config file {layer.source!r} names no model; add model = \"package.module:callable\" "
                f"(the gate would otherwise check its built-in LocalizationNet, not yours)"
            )

    naming = [index for index, layer in enumerate(layers) if layer.model]
    model = layers[naming[-1]].model if naming else None
    files = [layer for layer in layers if layer.from_file]
    if model is None and files and not model_object:
        raise ConfigError(
            f"{files[0].source} names no model; add model = \"package.module:callable\" "
            f"(the gate would otherwise check its built-in LocalizationNet, not yours)"
        )
    merged: dict[str, Any] = {}
    for index, layer in enumerate(layers):
        section = dict(layer.section)
        # A file below the layer that names the model describes its own model, or none: only the
        # run's settings cross over. Options given above it refine the named model.
        below = bool(naming) and index < naming[-1]
        if (layer.model is not None and layer.model != model) or (below and layer.from_file and layer.model != model):
            section = {k: v for k, v in section.items() if k in SESSION_KEYS}
        # Relative paths are anchored where they were written, before layers mix.
        for key in ("checkpoint", "onnx", "report_dir"):
            if section.get(key):
                section[key] = str(resolve_path(section[key], layer.base_dir, key))
        if isinstance(section.get("samples"), (str, list)):
            section["samples"] = _anchor_sample_paths(section["samples"], layer.base_dir)
        merged = _merge(merged, section)
    if object_class is not None and model is None:
        if not merged.get("inputs") or not merged.get("outputs"):
            raise ConfigError(
                f"the model object handed to export_and_register_model ({object_class}) is not the built-in "
                "LocalizationNet, so it needs its own inputs = [...] and outputs = [...], in config_overrides "
                "or in [tool.onnx-gate]"
            )
        merged["model"] = object_class
    elif merged.get("model", DEFAULT_MODEL) == DEFAULT_MODEL:
        merged = _merge(LOCALIZATION_NET_SECTION, merged)
    sources = tuple(layer.source for layer in layers) or ("built-in defaults",)
    search_dirs = tuple(dict.fromkeys([*(layer.base_dir for layer in layers), invocation_dir]))
    return parse(merged, invocation_dir, sources, search_dirs)
