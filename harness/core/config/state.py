"""``[[state]]`` and ``[rollout]``: a model that carries state across calls, checked up front.

Each ``[[state]]`` table declares one state input, the output that feeds it next call, and the
input's shape and range; a ``{i}`` in the names repeats it per layer (``layers``), as decoders
name their caches. The gate appends the state inputs after the declared ``[[inputs]]`` (layer by
layer, each layer's tables in their order: how transformers flattens a cache) and the state
outputs after ``outputs``, so the other checks judge them like any input and output.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

from harness.core.config.reading import check_keys
from harness.core.config.schema import FEED_RULES, FeedRule, RolloutConfig, StatePair, derived_parts
from harness.core.errors import ConfigError

STATE_KEYS = {"input", "output", "layers", "shape", "dtype", "range", "dims", "grows"}
ROLLOUT_KEYS = {"steps", "examples", "feed"}
LAYER = "{i}"
_ARGMAX = re.compile(r"^argmax\((?P<source>[^()]+)\)$")


def _positive(value: Any, what: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


def _expand(raw: Any, index: int) -> tuple[list[tuple[dict[str, Any], str]], str | None]:
    """One ``[[state]]`` table as (input table, output name) per layer, and the grown dimension."""
    where = f"state[{index}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table with input, output and shape, got {raw!r}")
    check_keys(raw, STATE_KEYS, where)
    for key in ("input", "output", "shape"):
        if key not in raw:
            raise ConfigError(f"{where} needs {key!r} (the state input, the output that feeds it, the input's shape)")
    name, output = raw["input"], raw["output"]
    if not isinstance(name, str) or not isinstance(output, str) or not name or not output:
        raise ConfigError(f"{where}.input and .output must be names, got {name!r} and {output!r}")
    shape = raw["shape"]
    grows = raw.get("grows")
    if grows is not None:
        plain = [d for d in shape if isinstance(d, str) and not derived_parts(d)] if isinstance(shape, list) else []
        if grows not in plain:
            raise ConfigError(f"{where}.grows must name a symbolic dimension of its shape {shape!r}, got {grows!r}")
    repeated = LAYER in name or LAYER in output
    if repeated and not (LAYER in name and LAYER in output):
        raise ConfigError(f"{where}: put {LAYER} in both input and output names ({name!r}, {output!r}), or in neither")
    if "layers" in raw and not repeated:
        raise ConfigError(f"{where}.layers repeats the state per layer: its input and output names need {LAYER}")
    layers = _positive(raw.get("layers", 1), f"{where}.layers", minimum=1) if repeated else 1
    if repeated and "layers" not in raw:
        raise ConfigError(f"{where}: {name!r} holds {LAYER}: say how many layers, e.g. layers = 2")
    table = {key: raw[key] for key in ("shape", "dtype", "range", "dims") if key in raw}
    return [({**table, "name": name.replace(LAYER, str(i))}, output.replace(LAYER, str(i))) for i in range(layers)], grows


def _feed_rule(input_name: str, raw: Any, outputs: Sequence[str]) -> FeedRule:
    where = f"rollout.feed.{input_name}"
    rules = ", ".join(("argmax(<output>)", *(r for r in FEED_RULES if r != "argmax")))
    if not isinstance(raw, str):
        raise ConfigError(f"{where} must be one of {rules}, got {raw!r}")
    argmax = _ARGMAX.match(raw.strip())
    if argmax:
        source = argmax.group("source").strip()
        if source not in outputs:
            raise ConfigError(f"{where} = {raw!r}: {source!r} is not an output; outputs: {', '.join(outputs)}")
        return FeedRule(input_name, "argmax", source)
    if raw not in FEED_RULES or raw == "argmax":
        raise ConfigError(f"{where} must be one of {rules}, got {raw!r}")
    return FeedRule(input_name, raw)


def _check_rule_shape(rule: FeedRule, shape: Any, grown: set[str]) -> None:
    """An ``extend`` mask must span the cache and the tokens; ``advance`` positions only the tokens."""
    last = shape[-1] if isinstance(shape, list) and shape else None
    parts = derived_parts(last) if isinstance(last, str) else ()
    where = f"rollout.feed.{rule.input} = {rule.rule!r}"
    if rule.rule == "extend":
        if not grown:
            raise ConfigError(f"{where} grows a mask with a cache: it needs a [[state]] with grows = \"<the cache's length>\"")
        if not set(parts) & grown:
            raise ConfigError(
                f"{where} adds a column per call: the input's last dimension must span the cache and the tokens, "
                f"like \"{sorted(grown)[0]} + sequence\", got {last!r}"
            )
    if rule.rule == "advance" and (not isinstance(last, str) or parts or last in grown):
        raise ConfigError(f"{where} gives the new tokens' positions: the input's last dimension must be the tokens', got {last!r}")


def expand_state(
    section: Mapping[str, Any], raw_inputs: list[Any], outputs: tuple[str, ...]
) -> tuple[list[Any], tuple[str, ...], RolloutConfig]:
    """The input tables and outputs with the state appended, and the rollout's settings."""
    raw_states = section.get("state", [])
    raw_rollout = section.get("rollout")
    if not isinstance(raw_states, list):
        raise ConfigError(f"state must be a list of [[state]] tables, got {raw_states!r}")
    if not raw_states:
        if raw_rollout is not None:
            raise ConfigError("[rollout] needs at least one [[state]] table: a model without state has nothing to roll out")
        return raw_inputs, outputs, RolloutConfig()
    declared = {raw.get("name") for raw in raw_inputs if isinstance(raw, dict)}
    tables: list[list[tuple[dict[str, Any], str]]] = []
    pairs_per_table: list[str | None] = []
    for index, raw in enumerate(raw_states):
        expanded, grows = _expand(raw, index)
        tables.append(expanded)
        pairs_per_table.append(grows)
    depth = max(len(t) for t in tables)
    state_inputs: list[dict[str, Any]] = []
    pairs: list[StatePair] = []
    for layer in range(depth):  # layer by layer: past.0.key, past.0.value, past.1.key, ...
        for expanded, grows in zip(tables, pairs_per_table):
            if layer < len(expanded):
                table, output = expanded[layer]
                state_inputs.append(table)
                pairs.append(StatePair(table["name"], output, grows))
    for pair in pairs:
        if pair.input in declared:
            raise ConfigError(f"state input {pair.input!r} is also in [[inputs]]: declare it once, in [[state]]")
        if pair.output in outputs:
            raise ConfigError(f"state output {pair.output!r} is also in outputs: [[state]] adds it, list it once")
    state_outputs = tuple(pair.output for pair in pairs)
    if len(set(state_outputs)) != len(state_outputs):
        raise ConfigError(f"state outputs must be unique, got {list(state_outputs)}")
    all_outputs = (*outputs, *state_outputs)

    rollout = raw_rollout if raw_rollout is not None else {}
    if not isinstance(rollout, dict):
        raise ConfigError(f"rollout must be a table like [tool.onnx-gate.rollout], got {rollout!r}")
    check_keys(rollout, ROLLOUT_KEYS, "rollout")
    feed = rollout.get("feed", {})
    if not isinstance(feed, dict):
        raise ConfigError(f"rollout.feed must be a table of input = rule, got {feed!r}")
    stepped = [raw.get("name") for raw in raw_inputs if isinstance(raw, dict)]
    unknown = [name for name in feed if name not in stepped]
    if unknown:
        raise ConfigError(f"rollout.feed names {unknown[0]!r}, which is not a declared [[inputs]] name; inputs: {', '.join(map(str, stepped))}")
    missing = [name for name in stepped if name not in feed]
    if missing:
        raise ConfigError(
            f"rollout.feed must say how each call makes input {missing[0]!r}: argmax(<output>), extend, advance, next or same"
        )
    feeds = tuple(_feed_rule(name, feed[name], all_outputs) for name in stepped)
    shapes = {raw.get("name"): raw.get("shape") for raw in raw_inputs if isinstance(raw, dict)}
    for rule in feeds:
        _check_rule_shape(rule, shapes[rule.input], {pair.grows for pair in pairs if pair.grows})
    config = RolloutConfig(
        states=tuple(pairs), feeds=feeds,
        steps=_positive(rollout.get("steps", RolloutConfig.steps), "rollout.steps", minimum=1),
        examples=_positive(rollout.get("examples", RolloutConfig.examples), "rollout.examples", minimum=0),
    )  # fmt: skip
    return [*raw_inputs, *state_inputs], all_outputs, config
