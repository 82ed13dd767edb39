"""Which registered model a gate may publish into, and how its versions say what they hold.

Every version the gate registers carries the model callable and a digest of the model's config
(callable, kwargs, inputs, outputs) as tags. A registered model whose versions carry another
digest holds another model: the gate adds no version to it and moves none of its aliases unless
``[publish] allow_config_change = true`` says so. A model other than the built-in default must
name its registered model, so that it never lands in the default one by omission.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any, Iterable

from harness.core.config import DEFAULT_MODEL, LOCALIZATION_NET_SECTION

if TYPE_CHECKING:
    from harness.core.config import GateConfig

CALLABLE_TAG = "model_callable"
DIGEST_TAG = "config_digest"


def is_builtin_default(config: GateConfig, *, model_object: bool = False) -> bool:
    """The built-in LocalizationNet exactly as the defaults describe it, built from the config."""
    return (
        not model_object
        and config.model == DEFAULT_MODEL
        and dict(config.model_kwargs) == LOCALIZATION_NET_SECTION["model_kwargs"]
    )


def unnamed_model_problem(config: GateConfig, *, model_object: bool = False) -> str | None:
    """Why this session may not publish under the default registered name, or None."""
    if config.publish.name_given or is_builtin_default(config, model_object=model_object):
        return None
    what = "a model object handed to the Python API" if model_object else f"{config.model}"
    if not model_object and config.model_kwargs:
        what += f" {dict(config.model_kwargs)}"
    return (
        f"--gate-publish refused before the gate ran: {what} is not the built-in default model, so it needs its "
        f"own registered model name; set [publish] model_name = \"...\" in [tool.onnx-gate] (without it, it would "
        f"become a version of {config.publish.model_name!r})"
    )


def config_digest(config: GateConfig) -> str:
    """16 hex digits over what makes the model what it is: callable, kwargs, inputs, outputs."""
    summary = config.summary()
    material = {key: summary[key] for key in ("model", "model_kwargs", "inputs", "outputs")}
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()[:16]


def version_tags(config: GateConfig) -> dict[str, str]:
    return {CALLABLE_TAG: config.model, DIGEST_TAG: config_digest(config)}


def other_config_versions(versions: Iterable[Any], digest: str) -> list[Any]:
    """Versions whose config digest differs; versions registered before these tags existed carry
    none and are not judged."""
    return [v for v in versions if v.tags.get(DIGEST_TAG) and v.tags[DIGEST_TAG] != digest]
