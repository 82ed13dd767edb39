"""What an ONNX artifact is: its graph file and every external data file the graph names.

ONNX keeps a model in one protobuf file only below 2 GB; above that the weights live in external
data files next to the graph (``model.onnx.data``, or one file per tensor from the TorchScript
exporter). The artifact is then all of those files, and its identity has to cover all of them:

* a self-contained file: the sha256 of the file;
* a graph with external data: the sha256 of its manifest, the UTF-8 text ::

      onnx-gate artifact 1
      graph <sha256> <size>
      data <location> <sha256> <size>      (one line per data file, sorted by location)

  where ``location`` is the file's path relative to the graph's folder exactly as the graph names
  it, and sizes are in bytes. Neither the folder nor the graph file's own name enters it, so the
  same model has the same identity wherever it was exported; different weights behind the same
  graph give a different identity.

Every file is hashed in chunks: nothing here holds a weight file in memory.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from harness.core.errors import ArtifactError

if TYPE_CHECKING:
    import onnx

MANIFEST_HEADER = "onnx-gate artifact 1"
# protobuf's hard limit for one serialized message; a model at or above it must keep external data.
PROTOBUF_LIMIT = 2**31


def file_sha256(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class ArtifactFile:
    """One file of the artifact: ``name`` is the graph's file name or a data file's location."""

    name: str
    size: int
    sha256: str
    role: str  # "graph" or "data"


@dataclass(frozen=True)
class ArtifactManifest:
    graph: ArtifactFile
    data: tuple[ArtifactFile, ...] = ()

    @property
    def files(self) -> tuple[ArtifactFile, ...]:
        return (self.graph, *self.data)

    @property
    def self_contained(self) -> bool:
        return not self.data

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def text(self) -> str:
        lines = [MANIFEST_HEADER, f"graph {self.graph.sha256} {self.graph.size}"]
        lines += [f"data {f.name} {f.sha256} {f.size}" for f in self.data]
        return "\n".join(lines) + "\n"

    @property
    def identity(self) -> str:
        if self.self_contained:
            return self.graph.sha256
        return hashlib.sha256(self.text().encode()).hexdigest()

    def to_json(self) -> str:
        return json.dumps({"identity": self.identity, "files": [asdict(f) for f in self.files]}, indent=2)

    def to_dict(self) -> list[dict[str, Any]]:
        return [asdict(f) for f in self.files]

    @classmethod
    def from_dicts(cls, files: Iterable[Mapping[str, Any]]) -> ArtifactManifest:
        """Back from ``to_dict()`` (as ArtifactInfo.files holds it)."""
        entries = [ArtifactFile(str(f["name"]), int(f["size"]), str(f["sha256"]), str(f["role"])) for f in files]
        graphs = [f for f in entries if f.role == "graph"]
        if len(graphs) != 1:
            raise ValueError(f"a manifest has one graph file, got {len(graphs)}")
        return cls(graphs[0], tuple(sorted((f for f in entries if f.role == "data"), key=lambda f: f.name)))


def data_locations(graph_path: Path, proto: onnx.ModelProto | None = None) -> list[str]:
    """The external data files the graph at ``graph_path`` (``proto``, when already loaded without
    its data) names, relative to its folder, sorted. Raises ArtifactError for a location that leaves
    the folder or a file that is missing."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, _get_all_tensors, uses_external_data

    if proto is None:
        proto = onnx.load(str(graph_path), load_external_data=False)
    locations = set()
    for tensor in _get_all_tensors(proto):
        if uses_external_data(tensor):
            locations.add(ExternalDataInfo(tensor).location)
    for location in locations:
        relative = PurePosixPath(location.replace("\\", "/"))
        if relative.is_absolute() or ".." in relative.parts:
            raise ArtifactError(
                f"{graph_path.name!r} names external data {location!r} outside its folder; "
                "save the model with data files beside the graph (relative locations)"
            )
        if not (graph_path.parent / relative).is_file():
            raise ArtifactError(
                f"{graph_path.name!r} names external data file {location!r}, which is not beside it; "
                "give the graph together with its data files"
            )
    return sorted(locations)


def manifest(graph_path: Path, proto: onnx.ModelProto | None = None) -> ArtifactManifest:
    """Hash the graph and every external data file it names (``proto``: its graph, if loaded)."""
    folder = graph_path.parent
    graph = ArtifactFile(graph_path.name, graph_path.stat().st_size, file_sha256(graph_path), "graph")
    data = tuple(
        ArtifactFile(location, (folder / location).stat().st_size, file_sha256(folder / location), "data")
        for location in data_locations(graph_path, proto)
    )
    return ArtifactManifest(graph, data)


def rehash(graph_path: Path, files: Iterable[Mapping[str, Any]]) -> ArtifactManifest:
    """The manifest of the files a manifest listed (``ArtifactInfo.files``), hashed again where
    they are now: the graph at ``graph_path``, data files beside it. Parses nothing, so a file
    changed into garbage gets another identity rather than a parse error."""
    listed = ArtifactManifest.from_dicts(files)
    folder = graph_path.parent

    def again(entry: ArtifactFile, path: Path) -> ArtifactFile:
        return ArtifactFile(entry.name, path.stat().st_size, file_sha256(path), entry.role)

    return ArtifactManifest(again(listed.graph, graph_path), tuple(again(d, folder / d.name) for d in listed.data))


def inline_external_data(source: Path, target: Path) -> None:
    """Write ``source`` with its external data as one self-contained file at ``target``."""
    import onnx

    proto = onnx.load(str(source), load_external_data=True)  # loading clears the external references
    onnx.save_model(proto, str(target), save_as_external_data=False)
