"""Every example in README.md and docs/ is checked against the code, so the docs cannot drift from it.

- ```toml blocks are loaded through the gate's own config loading (``config.load``): a block with a
  ``[tool.onnx-gate]`` table as a pyproject.toml, one with top-level keys as a --gate-config file.
  A fragment that names no model is read as part of a config that names the built-in one (its
  ``[tool.onnx-gate.tolerance]`` and the like mean nothing alone). Sample files a block names are
  created. A table headed ``# defaults shown`` must show the code's defaults.
- Commands (```console, ```bash, ```sh): ``onnx-gate VERB`` exists in the CLI; for ``run`` every
  ``--gate-*`` option is in the plugin's option table (with its value, and a valid choice), for the
  other verbs the whole line parses with that verb's own argparse parser; ``make`` targets exist in
  the Makefile; test paths given to pytest exist. Nothing is run.
- ```python blocks compile; names imported from ``harness`` exist, keyword arguments passed to them
  are parameters, attributes read from their results exist, and a literal ``config_overrides`` loads.
- Relative links resolve to a file, and an ``#anchor`` to a heading of it.

Markers, on the line before a fence: ``<!-- docs-test: error: MESSAGE -->`` (the block must be refused
with a one-line error containing MESSAGE), ``<!-- docs-test: skip: REASON -->`` (not checked, for REASON).
"""

from __future__ import annotations

import ast
import contextlib
import inspect
import io
import re
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from harness.core import config
from harness.core.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^(\s*)(```+)\s*([\w+-]*)\s*$")
MARKER = re.compile(r"^\s*<!--\s*docs-test:\s*(error|skip)\s*(?::\s*(.*?))?\s*-->\s*$")
COMMAND_LANGS = {"console", "bash", "sh", "shell"}
ONNX_GATE = {"onnx-gate", ".venv/bin/onnx-gate"}
# A config fragment (a [tool.onnx-gate.tolerance] table, say) is read as part of this model's config.
FRAGMENT_MODEL = config.DEFAULT_MODEL
# Tables whose header says "# defaults shown": what each key must equal.
DEFAULTS = {
    "tolerance": (lambda c: c.tolerance, config.Tolerance()),
    "bench": (lambda c: c.bench, config.BenchConfig()),
    "publish": (lambda c: c.publish, config.PublishConfig()),
}


@dataclass(frozen=True)
class Block:
    page: str  # relative to the repository root
    line: int  # of the fence's first content line, 1-based
    lang: str
    text: str
    marker: tuple[str, str] | None  # ("error" | "skip", its text)

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def blocks() -> list[Block]:
    found = []
    for path in PAGES:
        lines = path.read_text(encoding="utf-8").split("\n")
        index = 0
        while index < len(lines):
            opening = FENCE.match(lines[index])
            if not opening:
                index += 1
                continue
            indent, ticks, lang = opening.groups()
            end = next(
                i for i in range(index + 1, len(lines))
                if lines[i].strip() == ticks and lines[i].startswith(indent)
            )  # fmt: skip
            body = "\n".join(line.removeprefix(indent) for line in lines[index + 1 : end])
            previous = next((lines[i] for i in range(index - 1, -1, -1) if lines[i].strip()), "")
            marker = MARKER.match(previous)
            found.append(Block(
                str(path.relative_to(ROOT)), index + 2, lang.lower(), body + "\n",
                (marker.group(1), marker.group(2) or "") if marker else None,
            ))  # fmt: skip
            index = end + 1
    return found


BLOCKS = blocks()


def _apply_skip(block: Block) -> None:
    if block.marker and block.marker[0] == "skip":
        assert block.marker[1], f"{block.id}: a docs-test skip must give its reason"
        pytest.skip(f"{block.id}: {block.marker[1]}")


# --- TOML ---------------------------------------------------------------------------------------

TOML_BLOCKS = [b for b in BLOCKS if b.lang == "toml"]


def _as_config_file(block: Block) -> tuple[str, str, dict]:
    """(file name, its text, the gate section it holds) as the doc means the block."""
    document = tomllib.loads(block.text)
    text = block.text
    if "tool" in document:  # a pyproject.toml
        section = document["tool"].get("onnx-gate")
        if section is not None and "model" not in section:
            header = re.search(r"^\[tool\.onnx-gate\][ \t]*(#.*)?$", text, re.MULTILINE)
            model_line = f'model = "{FRAGMENT_MODEL}"\n'
            text = (
                text[: header.end() + 1] + model_line + text[header.end() + 1 :]
                if header else f"[tool.onnx-gate]\n{model_line}\n{text}"
            )  # fmt: skip
        return "pyproject.toml", text, section or {}
    if "model" not in document:  # top-level keys: a --gate-config file
        text = f'model = "{FRAGMENT_MODEL}"\n{text}'
    return "gate.toml", text, document


def _create_samples(section: dict, folder: Path) -> None:
    """The .npz files a block's ``samples`` names, one array per input."""
    samples = section.get("samples")
    if samples is None or (isinstance(samples, str) and ":" in samples and not samples.endswith(".npz")):
        return
    arrays = {}
    for raw in section.get("inputs", []):
        dims = raw.get("dims", {})
        shape = [
            d if isinstance(d, int) else min(max(2, dims.get(d, [1, 16])[0]), dims.get(d, [1, 16])[1])
            for d in raw["shape"]
        ]
        arrays[raw["name"]] = np.ones(shape, dtype=raw.get("dtype", "float32"))
    for entry in [samples] if isinstance(samples, str) else samples:
        path = folder / re.sub(r"[*?]|\[[^\]]*\]", "example", entry)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **arrays)


def _defaults_shown(block: Block, section: dict, loaded: config.GateConfig) -> None:
    for match in re.finditer(
        r"^\[(?:tool\.onnx-gate\.)?([\w-]+)\][^\n]*#[^\n]*defaults shown", block.text, re.MULTILINE
    ):
        table = match.group(1)
        assert table in DEFAULTS, (
            f"{block.id}: [{table}] says 'defaults shown'; test_docs.py knows no defaults for it"
        )
        read, default = DEFAULTS[table]
        for key, value in section[table].items():
            if isinstance(value, dict):
                continue  # a subtable (tolerance.per_output) is not a default
            assert getattr(read(loaded), key) == getattr(default, key), (
                f"{block.id}: [{table}] {key} = {value!r} is shown as the default; the code's default is "
                f"{getattr(default, key)!r}"
            )


@pytest.mark.parametrize("block", TOML_BLOCKS, ids=[b.id for b in TOML_BLOCKS])
def test_toml_example_loads_through_the_gate_config(block: Block, tmp_path: Path) -> None:
    _apply_skip(block)
    name, text, section = _as_config_file(block)
    (tmp_path / name).write_text(text, encoding="utf-8")
    _create_samples(section, tmp_path)
    config_file = Path(name) if name == "gate.toml" else None
    if block.marker and block.marker[0] == "error":
        expected = block.marker[1]
        assert expected, f"{block.id}: a docs-test error marker must give the message"
        with pytest.raises(ConfigError) as refused:
            config.load(invocation_dir=tmp_path, config_file=config_file)
        message = str(refused.value)
        assert "\n" not in message, f"{block.id}: the error is not one line: {message!r}"
        assert expected in message, f"{block.id}: documented error {expected!r}, the gate says {message!r}"
        return
    loaded = config.load(invocation_dir=tmp_path, config_file=config_file)
    assert loaded.model == section.get("model", FRAGMENT_MODEL)
    _defaults_shown(block, section, loaded)


# --- commands -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    page: str
    line: int
    argv: tuple[str, ...]

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def commands() -> list[Command]:
    found = []
    for block in BLOCKS:
        if block.lang not in COMMAND_LANGS or (block.marker and block.marker[0] == "skip"):
            continue
        lines = block.text.rstrip("\n").split("\n")
        prompted = block.lang == "console" and any(line.startswith("$ ") for line in lines)
        joined: list[tuple[int, str]] = []
        for offset, line in enumerate(lines):
            if joined and joined[-1][1].endswith("\\"):
                joined[-1] = (joined[-1][0], joined[-1][1][:-1] + " " + line.strip())
            elif not prompted or line.startswith("$ "):
                joined.append((block.line + offset, line.removeprefix("$ ")))
        for number, line in joined:
            argv = shlex.split(line, comments=True)
            while argv and re.match(r"^[A-Z_][A-Z0-9_]*=", argv[0]):
                argv = argv[1:]  # VAR=value before the command
            if argv and (argv[0] in ONNX_GATE or argv[0] == "make" or argv[1:3] == ["-m", "pytest"]):
                found.append(Command(block.page, number, tuple(argv)))
    return found


COMMANDS = commands()


def gate_options() -> dict[str, dict]:
    """The plugin's --gate-* option table: option -> its addoption attributes."""
    from harness.plugin.hooks import pytest_addoption

    table: dict[str, dict] = {}

    class Recorder:
        def getgroup(self, *args: object, **kwargs: object) -> Recorder:
            return self

        def addoption(self, *names: str, **attrs: object) -> None:
            table.update({name: attrs for name in names})

    pytest_addoption(Recorder())  # type: ignore[arg-type]
    return table


def _verbs() -> dict:
    from harness.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return dict(subparsers.choices)


def _make_targets() -> set[str]:
    return set(re.findall(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", (ROOT / "Makefile").read_text(), re.MULTILINE))


def _check_run(command: Command, args: list[str]) -> None:
    from harness.cli import positional_arguments
    from harness.core.profiles import PROFILES

    options = gate_options()
    for index, argument in enumerate(args):
        name, has_value, value = argument.partition("=")
        if name == "--hypothesis-profile":
            profile = value if has_value else (args[index + 1] if index + 1 < len(args) else "")
            assert profile in PROFILES, (
                f"{command.id}: no Hypothesis profile {profile!r}; profiles: {PROFILES}"
            )
        if not name.startswith("--gate-"):
            continue
        assert name in options, (
            f"{command.id}: {name} is not an option of the plugin; options: {sorted(options)}"
        )
        attrs = options[name]
        if attrs.get("action") in ("store_true", "store_false", "count"):
            assert not has_value, f"{command.id}: {name} takes no value"
            continue
        if not has_value:
            assert index + 1 < len(args) and not args[index + 1].startswith("-"), (
                f"{command.id}: {name} needs a value"
            )
            value = args[index + 1]
        if attrs.get("choices"):
            assert value in attrs["choices"], (
                f"{command.id}: {name} {value!r} is not one of {attrs['choices']}"
            )
    for path in positional_arguments(args):
        assert (ROOT / path.split("::")[0]).exists(), (
            f"{command.id}: no test path {path!r} in the gate's suite"
        )


def _check_verb(command: Command, verb: str, parser, args: list[str]) -> None:
    for argument in args:
        name = argument.partition("=")[0]
        if name.startswith("-"):
            assert name in parser._option_string_actions, (
                f"{command.id}: `onnx-gate {verb}` has no option {name}; it has "
                f"{sorted(o for o in parser._option_string_actions if o.startswith('--'))}"
            )
    errors = io.StringIO()
    with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
        try:
            parser.parse_args(args)
        except SystemExit as exc:
            assert exc.code == 0, (
                f"{command.id}: `onnx-gate {verb}` refuses {' '.join(args)!r}: {errors.getvalue().strip()}"
            )


@pytest.mark.parametrize("command", COMMANDS, ids=[c.id for c in COMMANDS])
def test_command_example_matches_the_cli(command: Command) -> None:
    argv = list(command.argv)
    if argv[0] == "make":
        targets = _make_targets()
        for target in [a for a in argv[1:] if "=" not in a and not a.startswith("-")]:
            assert target in targets, (
                f"{command.id}: no make target {target!r}; the Makefile has {sorted(targets)}"
            )
        return
    if argv[1:3] == ["-m", "pytest"]:
        from harness.cli import positional_arguments

        for path in positional_arguments(argv[3:]):
            assert (ROOT / path.split("::")[0]).exists(), f"{command.id}: no test path {path!r}"
        return
    verbs = _verbs()
    assert len(argv) > 1 and argv[1] in verbs, (
        f"{command.id}: onnx-gate has no verb {argv[1:2]}; verbs: {sorted(verbs)}"
    )
    if argv[1] == "run":
        _check_run(command, argv[2:])
    else:
        _check_verb(command, argv[1], verbs[argv[1]], argv[2:])


# --- Python -------------------------------------------------------------------------------------

PYTHON_BLOCKS = [b for b in BLOCKS if b.lang == "python"]


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[b.id for b in PYTHON_BLOCKS])
def test_python_example_compiles_and_uses_the_api_as_it_is(block: Block, tmp_path: Path) -> None:
    import importlib

    _apply_skip(block)
    code = block.text.replace("\n    ...  ", "\n    pass  ").replace("    ...\n", "    pass\n")
    compile(code, block.id, "exec")
    tree = ast.parse(code)
    imported = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "harness":
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{block.id}: {node.module} has no {alias.name!r}"
                imported[alias.asname or alias.name] = getattr(module, alias.name)
    results: dict[str, type] = {}  # variable -> the class a harness call returned
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in imported):
            continue
        function = imported[node.func.id]
        parameters = inspect.signature(function).parameters
        for keyword in node.keywords:
            assert keyword.arg in parameters, f"{block.id}: {node.func.id}() has no parameter {keyword.arg!r}"
            if keyword.arg == "config_overrides":
                overrides = ast.literal_eval(keyword.value)
                config.load(
                    invocation_dir=tmp_path,
                    api_overrides=overrides,
                    model_object=True,
                    object_class="torch.nn.modules.container:Sequential",
                )
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Name)
        ):
            function = imported.get(node.value.func.id)
            returned = inspect.signature(function).return_annotation if callable(function) else None
            if isinstance(returned, str):  # postponed annotations: the name in the function's module
                returned = function.__globals__.get(returned)
            if isinstance(returned, type):
                results.update(
                    {target.id: returned for target in node.targets if isinstance(target, ast.Name)}
                )
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in results:
            cls = results[node.value.id]
            fields = getattr(cls, "__dataclass_fields__", {})
            assert node.attr in fields or hasattr(cls, node.attr), (
                f"{block.id}: {cls.__name__} has no {node.attr!r}"
            )


# --- links and options mentioned in the text ---------------------------------------------------

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    anchors, fence = set(), False
    for line in path.read_text(encoding="utf-8").split("\n"):
        if FENCE.match(line):
            fence = not fence
        elif not fence and (heading := re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)):
            slug, n = _slug(heading.group(1)), 1
            while slug in anchors:
                slug, n = f"{_slug(heading.group(1))}-{n}", n + 1
            anchors.add(slug)
    return anchors


def links() -> list[tuple[str, int, str]]:
    found = []
    for path in PAGES:
        fence = False
        for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
            if FENCE.match(line):
                fence = not fence
                continue
            if fence:
                continue
            for target in LINK.findall(line):
                if not re.match(r"^[a-z]+:", target):
                    found.append((str(path.relative_to(ROOT)), number, target))
    return found


LINKS = links()


@pytest.mark.parametrize(("page", "line", "target"), LINKS, ids=[f"{p}:{n}" for p, n, _ in LINKS])
def test_relative_link_resolves(page: str, line: int, target: str) -> None:
    file, _, anchor = target.partition("#")
    path = (ROOT / page).parent / file if file else ROOT / page
    assert path.exists(), f"{page}:{line}: link to {target!r}: no such file {path.relative_to(ROOT)}"
    if anchor:
        anchors = _anchors(path)
        assert anchor in anchors, (
            f"{page}:{line}: link to {target!r}: no heading #{anchor}; headings: {sorted(anchors)}"
        )


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_gate_option_the_text_names_exists(page: Path) -> None:
    named = set(re.findall(r"--gate-[a-z][a-z-]*[a-z]", page.read_text(encoding="utf-8")))
    unknown = named - set(gate_options())
    assert not unknown, f"{page.relative_to(ROOT)} names options the plugin does not have: {sorted(unknown)}"


def test_running_the_gate_lists_every_gate_option() -> None:
    text = (ROOT / "docs" / "running.md").read_text(encoding="utf-8")
    missing = [option for option in gate_options() if f"`{option}" not in text]
    assert not missing, f"docs/running.md does not list {missing}"


def test_the_docs_have_examples_of_each_kind() -> None:
    """The parsers above found what they check (an empty parametrisation would pass silently)."""
    assert len(TOML_BLOCKS) >= 8 and len(COMMANDS) >= 10 and PYTHON_BLOCKS and len(LINKS) >= 20
    assert any(b.marker and b.marker[0] == "error" for b in TOML_BLOCKS)
