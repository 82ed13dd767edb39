"""Path-free, byte-reproducible ONNX files.

The dynamo exporter records each node's Python stack trace in ``pkg.torch.onnx.stack_trace``, with
the absolute path of every source file: the checkout's and the virtual environment's. Those make
the same model's bytes (and so its sha256 and its registry version) depend on the folder it was
built in, and they tell every downloader how the build machine is laid out. Here each absolute
path becomes the path Python imports it by (``torch/nn/modules/conv.py``,
``harness/models/convnext.py``, ``user_models.py``); name scopes, class hierarchy, file names and
line numbers stay, so a node still leads back to its source.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Sequence

if TYPE_CHECKING:
    import onnx

# Characters a path component stops at in free text: quotes, brackets, separators, and ':' so that
# "conv.py:554" keeps its line number outside the match.
_COMPONENT = r"""[^\s"'<>|*?,;()\[\]{}/\\:]"""
# An absolute path starts a token: not after a word character, '.', '-' or ':' (URLs, relative
# paths and the exporter's "Module/child" scopes are not absolute paths).
ABSOLUTE_PATH = re.compile(
    rf"(?<![\w.:/\\-])/(?:{_COMPONENT}+/)*{_COMPONENT}+"  # POSIX
    rf"|(?<![\w.])[A-Za-z]:[\\/](?:{_COMPONENT}+[\\/])*{_COMPONENT}+"  # Windows
)


def import_roots(extra: Iterable[Path] = ()) -> list[str]:
    """Folders files are imported from, longest first: each loaded module's root (this covers
    editable installs, whose folders are not on sys.path), sys.path, and ``extra``."""
    roots: set[str] = set()
    candidates = [Path(p) for p in sys.path if p] + [Path(p) for p in extra]
    for name, module in list(sys.modules.items()):
        root = _module_root(name, getattr(module, "__file__", None))
        if root is not None:
            candidates.append(root)
    for path in candidates:
        for form in (path, path.resolve()) if path.is_absolute() else (path.resolve(),):
            text = form.as_posix().rstrip("/")
            if text:  # "/" itself would make every path "relative"
                roots.add(text)
    return sorted(roots, key=len, reverse=True)


def _module_root(name: str, file: str | None) -> Path | None:
    """The folder a module was imported from: its file minus its dotted name."""
    if not file or name == "__main__":
        return None
    path = Path(file)
    parts = name.split(".")
    if path.stem != "__init__":
        if path.stem != parts[-1]:
            return None
        parts = parts[:-1]
    folder = path.parent
    for part in reversed(parts):
        if folder.name != part:
            return None
        folder = folder.parent
    return folder


def relative_source(path: str, roots: Sequence[str]) -> str:
    """``path`` relative to the longest root holding it; its bare file name when none does."""
    posix = path.replace("\\", "/")
    for root in roots:
        if posix.startswith(root + "/"):
            return posix[len(root) + 1 :]
    return posix.rsplit("/", 1)[-1]


def scrub_paths(model: onnx.ModelProto, roots: Sequence[str]) -> int:
    """Rewrite every absolute path in the model's free text in place; returns how many."""
    count = 0

    def relative(match: re.Match[str]) -> str:
        nonlocal count
        count += 1
        return relative_source(match.group(0), roots)

    for text, put in _text_fields(model):
        if "/" in text or "\\" in text:
            put(ABSOLUTE_PATH.sub(relative, text))
    return count


def count_absolute_paths(model: onnx.ModelProto) -> int:
    """How many absolute paths the model's doc strings and metadata hold."""
    return sum(len(ABSOLUTE_PATH.findall(text)) for text, _ in _text_fields(model))


def make_reproducible(path: Path, project_dirs: Iterable[Path] = ()) -> int:
    """Rewrite the ONNX file at ``path`` without absolute paths; returns how many it held.

    Paths under ``project_dirs`` that no module claims become relative to the project. The file is
    written back by onnx's serializer, so the same model gives the same bytes in any folder.
    """
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    count = scrub_paths(model, import_roots(project_dirs))
    if count:
        onnx.save_model(model, str(path))
    return count


# --- every free-text field of a model ----------------------------------------------------------

_Field = tuple[str, Callable[[str], None]]


def _text_fields(model: onnx.ModelProto) -> Iterator[_Field]:
    yield from _own_fields(model)
    yield from _graph_fields(model.graph)
    for function in model.functions:
        yield from _own_fields(function)
        yield from _nodes_fields(function.node)


def _own_fields(message: object) -> Iterator[_Field]:
    """A message's doc_string and the values of its metadata_props, each with a setter."""
    if getattr(message, "doc_string", ""):
        yield message.doc_string, lambda value, m=message: setattr(m, "doc_string", value)  # type: ignore[attr-defined]
    for entry in getattr(message, "metadata_props", ()):
        yield entry.value, lambda value, e=entry: setattr(e, "value", value)


def _graph_fields(graph: onnx.GraphProto) -> Iterator[_Field]:
    yield from _own_fields(graph)
    for value in (*graph.input, *graph.output, *graph.value_info, *graph.initializer):
        yield from _own_fields(value)
    yield from _nodes_fields(graph.node)


def _nodes_fields(nodes: Iterable[onnx.NodeProto]) -> Iterator[_Field]:
    for node in nodes:
        yield from _own_fields(node)
        for attribute in node.attribute:
            yield from _own_fields(attribute)
            for graph in (attribute.g, *attribute.graphs):
                yield from _graph_fields(graph)
