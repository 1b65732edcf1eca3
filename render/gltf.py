"""Minimal, strict GLB (binary glTF 2.0) reading and writing with numpy: enough to write the
procedural characters and to read skinned meshes back, with errors that say what is wrong."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from render.geometry import quaternion_to_matrix, transform

GLB_MAGIC, JSON_CHUNK, BIN_CHUNK = 0x46546C67, 0x4E4F534A, 0x004E4942
COMPONENT_DTYPES = {5120: np.int8, 5121: np.uint8, 5122: np.int16, 5123: np.uint16, 5125: np.uint32,
                    5126: np.float32}
DTYPE_COMPONENTS = {np.dtype(v): k for k, v in COMPONENT_DTYPES.items()}
TYPE_SIZES = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT4": 16}
ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER = 34962, 34963
BINARY_GLTF_SUFFIXES = (".glb", ".vrm")  # VRM is binary glTF with extensions


class GltfError(ValueError):
    """A file that is not a readable glTF 2.0 binary."""


class GlbBuilder:
    """Accumulates buffer views and accessors into one binary chunk."""

    def __init__(self):
        self.gltf: dict = {"asset": {"version": "2.0", "generator": "pairforge"},
                           "buffers": [], "bufferViews": [], "accessors": []}
        self._blob = bytearray()

    @classmethod
    def from_glb(cls, glb: "Glb") -> "GlbBuilder":
        """Start from an existing file, to add to it."""
        builder = cls()
        builder.gltf = glb.gltf
        builder._blob = bytearray(glb.blob)
        return builder

    def _view(self, data: bytes, target: int | None = None) -> int:
        while len(self._blob) % 4:
            self._blob.append(0)
        view = {"buffer": 0, "byteOffset": len(self._blob), "byteLength": len(data)}
        if target is not None:
            view["target"] = target
        self._blob += data
        self.gltf["bufferViews"].append(view)
        return len(self.gltf["bufferViews"]) - 1

    def accessor(self, array: np.ndarray, kind: str, target: int | None = ARRAY_BUFFER,
                 with_bounds: bool = False) -> int:
        array = np.ascontiguousarray(array)
        if kind == "MAT4":  # glTF matrices are column-major
            array = np.ascontiguousarray(np.transpose(array, (0, 2, 1)))
        accessor = {"bufferView": self._view(array.tobytes(), target),
                    "componentType": DTYPE_COMPONENTS[array.dtype], "count": len(array), "type": kind}
        if with_bounds:
            flat = array.reshape(len(array), -1)
            accessor["min"], accessor["max"] = flat.min(0).tolist(), flat.max(0).tolist()
        self.gltf["accessors"].append(accessor)
        return len(self.gltf["accessors"]) - 1

    def image(self, png: bytes) -> int:
        self.gltf.setdefault("images", []).append({"bufferView": self._view(png), "mimeType": "image/png"})
        return len(self.gltf["images"]) - 1

    def to_bytes(self) -> bytes:
        while len(self._blob) % 4:
            self._blob.append(0)
        self.gltf["buffers"] = [{"byteLength": len(self._blob)}]
        text = json.dumps(self.gltf, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 4)
        total = 12 + 8 + len(text) + 8 + len(self._blob)
        return (struct.pack("<III", GLB_MAGIC, 2, total) + struct.pack("<II", len(text), JSON_CHUNK) + text
                + struct.pack("<II", len(self._blob), BIN_CHUNK) + bytes(self._blob))


class Glb:
    """A parsed GLB: its JSON and binary chunk, with typed accessor reads."""

    def __init__(self, data: bytes, name: str = "<glb>"):
        self.name = name
        if len(data) < 20:
            raise GltfError(f"{name}: {len(data)} bytes is too short for a GLB file")
        magic, version, total = struct.unpack_from("<III", data)
        if magic != GLB_MAGIC:
            raise GltfError(f"{name}: not a binary glTF file (bad magic)")
        if version != 2:
            raise GltfError(f"{name}: glTF version {version}, need 2")
        if total > len(data):
            raise GltfError(f"{name}: truncated ({len(data)} of {total} bytes)")
        length, kind = struct.unpack_from("<II", data, 12)
        if kind != JSON_CHUNK or 20 + length > total:
            raise GltfError(f"{name}: first chunk is not valid JSON")
        try:
            self.gltf = json.loads(data[20:20 + length])
        except ValueError as error:
            raise GltfError(f"{name}: JSON chunk does not parse ({error})") from None
        self.blob = b""
        offset = 20 + length
        if offset + 8 <= total:
            blob_length, kind = struct.unpack_from("<II", data, offset)
            if kind == BIN_CHUNK:
                self.blob = data[offset + 8:offset + 8 + blob_length]
                if len(self.blob) != blob_length:
                    raise GltfError(f"{name}: binary chunk truncated")

    @classmethod
    def load(cls, path: str | Path) -> "Glb":
        path = Path(path)
        if path.suffix.lower() not in BINARY_GLTF_SUFFIXES:
            raise GltfError(f"{path.name}: the numpy loader reads binary glTF (.glb, .vrm), not {path.suffix}; "
                            f"render it with --backend blender")
        return cls(path.read_bytes(), path.name)

    def buffer_view(self, index: int) -> bytes:
        try:
            view = self.gltf["bufferViews"][index]
            if view.get("buffer", 0) != 0 or "uri" in self.gltf["buffers"][0]:
                raise GltfError(f"{self.name}: external buffers are not supported")
            start = view.get("byteOffset", 0)
            data = self.blob[start:start + view["byteLength"]]
        except (KeyError, IndexError, TypeError) as error:
            raise GltfError(f"{self.name}: bad bufferView {index} ({error!r})") from None
        if len(data) != view["byteLength"]:
            raise GltfError(f"{self.name}: bufferView {index} runs past the binary chunk")
        return data

    def read(self, index: int) -> np.ndarray:
        try:
            accessor = self.gltf["accessors"][index]
            dtype = np.dtype(COMPONENT_DTYPES[accessor["componentType"]])
            width = TYPE_SIZES[accessor["type"]]
            count = accessor["count"]
        except (KeyError, IndexError, TypeError) as error:
            raise GltfError(f"{self.name}: bad accessor {index} ({error!r})") from None
        if "bufferView" in accessor:
            array = self._rows(accessor["bufferView"], accessor.get("byteOffset", 0), dtype, width, count, index)
        else:  # all zeros unless sparse values are given (morph targets often are)
            array = np.zeros((count, width), dtype)
        if "sparse" in accessor:
            array = array.copy()
            try:
                sparse = accessor["sparse"]
                ids = self._rows(sparse["indices"]["bufferView"], sparse["indices"].get("byteOffset", 0),
                                 np.dtype(COMPONENT_DTYPES[sparse["indices"]["componentType"]]), 1, sparse["count"],
                                 index)[:, 0]
                values = self._rows(sparse["values"]["bufferView"], sparse["values"].get("byteOffset", 0), dtype,
                                    width, sparse["count"], index)
                array[ids.astype(np.int64)] = values
            except (KeyError, IndexError, TypeError) as error:
                raise GltfError(f"{self.name}: bad sparse accessor {index} ({error!r})") from None
        if accessor.get("normalized") and dtype.kind in "ui":
            array = array.astype(np.float32) / np.iinfo(dtype).max
        if accessor["type"] == "MAT4":
            return array.reshape(count, 4, 4).transpose(0, 2, 1)
        return array[:, 0] if width == 1 else array

    def _rows(self, view_index: int, start: int, dtype: np.dtype, width: int, count: int, accessor: int) -> np.ndarray:
        """(count, width) elements of ``dtype`` from a buffer view, honouring its byte stride."""
        view = self.gltf["bufferViews"][view_index]
        data = self.buffer_view(view_index)
        stride = view.get("byteStride", dtype.itemsize * width)
        need = start + stride * (count - 1) + dtype.itemsize * width if count else 0
        if need > len(data):
            raise GltfError(f"{self.name}: accessor {accessor} needs {need} bytes, its view has {len(data)}")
        rows = np.lib.stride_tricks.as_strided(
            np.frombuffer(data, dtype=np.uint8, count=len(data) - start, offset=start),
            shape=(count, dtype.itemsize * width), strides=(stride, 1))
        return np.ascontiguousarray(rows).view(dtype).reshape(count, width)


def node_matrix(node: dict) -> np.ndarray:
    """A glTF node's local transform (its matrix, or translation x rotation x scale)."""
    if "matrix" in node:
        return np.asarray(node["matrix"], float).reshape(4, 4).T
    m = transform(quaternion_to_matrix(node.get("rotation", (0, 0, 0, 1))), node.get("translation", (0, 0, 0)))
    return m @ np.diag([*node.get("scale", (1, 1, 1)), 1.0])


def parents_first(nodes: list[dict], name: str) -> tuple[list[int], np.ndarray]:
    """The nodes ordered parents-first, so forward kinematics is one pass: (file index of each,
    position of its parent in that order or -1). A cycle is a GltfError naming ``name``."""
    parent = {child: i for i, n in enumerate(nodes) for child in n.get("children", [])}
    order, placed = [], set()
    for i in range(len(nodes)):
        chain = [i]  # i and its unplaced ancestors, walked up iteratively
        while chain[-1] in parent and parent[chain[-1]] not in placed:
            if parent[chain[-1]] in chain:
                raise GltfError(f"{name}: the node hierarchy has a cycle at node {i}")
            chain.append(parent[chain[-1]])
        for node in reversed(chain):
            if node not in placed:
                placed.add(node)
                order.append(node)
    at = {old: new for new, old in enumerate(order)}
    return order, np.array([at[parent[i]] if i in parent else -1 for i in order], dtype=int)
