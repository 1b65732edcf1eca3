"""The atomic shard writer. A shard is written as ``NAME.<writer>.tar.tmp`` (unique per writer,
so a retried or orphaned writer of the same shard never shares a file) and renamed to ``NAME.tar``
only when complete; ``NAME.json`` (the manifest) is written last, so a shard is done exactly
when its manifest exists and agrees with the tar. Bytes are deterministic (fixed mtime, owner,
member order), so the same records always give the same shard."""
from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import tarfile
import uuid
import zlib
from collections import Counter
from importlib import metadata
from pathlib import Path

from shards.keys import check_key
from shards.schema import Schema
from shards.stage import reject_reason

RECORD_STATUS_KEYS = ("status", "error")


def package_versions(*extra: str) -> dict[str, str]:
    """Versions of the packages that shape a shard's bytes, for its manifest."""
    versions = {"python": platform.python_version(), "zlib": zlib.ZLIB_RUNTIME_VERSION}  # zlib: our PNGs
    for name in ("pairforge", "numpy", "pillow", "webdataset", *extra):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def manifest_path(directory: Path, name: str) -> Path:
    return Path(directory) / f"{name}.json"


def read_manifest(directory: Path, name: str) -> dict | None:
    path = manifest_path(directory, name)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def shard_is_complete(directory: Path, name: str, config_hash: str) -> bool:
    """True when NAME's manifest exists, was written under ``config_hash`` and matches the tar's size."""
    manifest = read_manifest(directory, name)
    tar = Path(directory) / f"{name}.tar"
    return (manifest is not None and manifest.get("config_hash") == config_hash
            and tar.is_file() and tar.stat().st_size == manifest.get("bytes"))


def _writer_token() -> str:
    return f"{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f"{path.name}.{_writer_token()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class ShardWriter:
    """Writes the records of one shard; records with ``status != "ok"`` go to the rejects list
    with every field they carry (the error and any verdict fields such as scores).

    Use as a context manager: on an exception the partial ``.tar.tmp`` is removed and no
    manifest is written, so nothing incomplete is ever visible as a shard.
    """

    def __init__(self, directory: str | os.PathLike, name: str, schema: Schema, config_hash: str,
                 versions: dict[str, str] | None = None):
        check_key(name)
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.schema = schema
        self.config_hash = config_hash
        self.versions = versions or package_versions()
        self.keys: list[str] = []
        self.rejects: list[dict] = []
        self._tmp_path = self.directory / f"{name}.{_writer_token()}.tar.tmp"
        self._file = open(self._tmp_path, "wb")
        self._hash = hashlib.sha256()
        self._tar = tarfile.open(fileobj=_HashingWriter(self._file, self._hash), mode="w|",
                                 format=tarfile.USTAR_FORMAT)
        self.manifest: dict | None = None

    def write(self, record: dict) -> None:
        key = check_key(record["__key__"])
        status = record.get("status", "ok")
        if status != "ok":
            fields = {k: v for k, v in record.items() if k not in ("__key__", *RECORD_STATUS_KEYS)}
            try:
                json.dumps(fields)
            except (TypeError, ValueError) as error:
                raise ValueError(f"reject {key}: its fields {sorted(fields)} must be JSON values ({error})") from None
            self.rejects.append({**fields, "key": key, "status": status, "error": str(record.get("error", ""))})
            return
        if key in self.keys:
            raise ValueError(f"duplicate key {key!r} in shard {self.name}")
        members = {k: v for k, v in record.items() if k != "__key__" and k not in RECORD_STATUS_KEYS}
        missing = set(self.schema.members) - set(members)  # indexed members are checked by inspect
        if missing:
            raise ValueError(f"record {key} lacks members {sorted(missing)} of {self.schema.tag}")
        for ext in sorted(members):
            data = members[ext]
            if isinstance(data, str):
                data = data.encode()
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            self._tar.addfile(info, io.BytesIO(data))
        self.keys.append(key)

    def close(self) -> dict:
        """Finish the tar, rename it into place, then write the manifest; returns the manifest."""
        if self.manifest is not None:
            return self.manifest
        self._tar.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        tar_path = self.directory / f"{self.name}.tar"
        os.replace(self._tmp_path, tar_path)
        reasons = Counter(reject_reason(r["error"]) for r in self.rejects)
        manifest = {
            "shard": f"{self.name}.tar",
            "schema": {"name": self.schema.name, "version": self.schema.version},
            "count": len(self.keys),
            "keys": self.keys,
            "status": {"ok": len(self.keys), "rejected": len(self.rejects)},
            "reject_reasons": dict(sorted(reasons.items())),
            "rejects": self.rejects,
            "bytes": tar_path.stat().st_size,
            "sha256": self._hash.hexdigest(),
            "config_hash": self.config_hash,
            "versions": self.versions,
        }
        _write_atomically(manifest_path(self.directory, self.name),
                          json.dumps(manifest, indent=1, sort_keys=True).encode())
        self.manifest = manifest
        return manifest

    def abort(self) -> None:
        try:
            self._tar.close()
        finally:
            self._file.close()
        self._tmp_path.unlink(missing_ok=True)

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        else:
            self.close()


class _HashingWriter:
    """A write-only file object that hashes what passes through it."""

    def __init__(self, file, digest):
        self._file, self._digest = file, digest

    def write(self, data: bytes) -> int:
        self._digest.update(data)
        return self._file.write(data)
