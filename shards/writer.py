"""The atomic shard writer. A shard is written as ``NAME.<writer>.tar.tmp`` (unique per writer,
so a retried or orphaned writer of the same shard never shares a file) and renamed to ``NAME.tar``
only when complete; ``NAME.json`` (the manifest) is written last, so a shard is done exactly
when its manifest exists and agrees with the tar. Bytes are deterministic (fixed mtime, owner,
member order), so the same records always give the same shard.

On object storage (``s3://``, ``gs://``: shards/storage.py) the tar is built in a local spool file
and uploaded whole; an object is visible only once its upload completes, so no partial shard is
ever visible and no temporary object is left on the bucket. Both the tar and the manifest are
uploaded create-only (S3's ``If-None-Match: *``): of two writers racing on one shard the first to
finish its upload wins, and the other finds the object there, keeps it if its bytes equal its own
(the usual case: shards are deterministic) and otherwise raises ShardConflict without touching it."""
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

from shards import storage
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


def manifest_path(directory: str | os.PathLike, name: str) -> str:
    return storage.join(directory, f"{name}.json")


def read_manifest(directory: str | os.PathLike, name: str) -> dict | None:
    try:
        return json.loads(storage.read_bytes(manifest_path(directory, name)))
    except (OSError, ValueError):
        return None


def shard_is_complete(directory: str | os.PathLike, name: str, config_hash: str) -> bool:
    """True when NAME's manifest exists, was written under ``config_hash`` and matches the tar's size."""
    manifest = read_manifest(directory, name)
    return (manifest is not None and manifest.get("config_hash") == config_hash
            and storage.size(storage.join(directory, f"{name}.tar")) == manifest.get("bytes"))


def _split_of_record(meta) -> str | None:
    """The record's train/test split from its json member, so the manifest can list it: a loader
    then takes one split from the manifests alone, without opening a tar."""
    if not isinstance(meta, (bytes, str)):
        return None
    try:
        split = json.loads(meta).get("split")
    except (ValueError, AttributeError):
        return None
    return split if isinstance(split, str) else None


class ShardConflict(RuntimeError):
    """Another writer finished the same shard first, with other bytes; its shard is kept."""


def _writer_token() -> str:
    return f"{os.getpid()}-{uuid.uuid4().hex[:8]}"


class ShardWriter:
    """Writes the records of one shard; records with ``status != "ok"`` go to the rejects list
    with every field they carry (the error and any verdict fields such as scores).

    Use as a context manager: on an exception the partial ``.tar.tmp`` is removed and no
    manifest is written, so nothing incomplete is ever visible as a shard.
    """

    def __init__(self, directory: str | os.PathLike, name: str, schema: Schema, config_hash: str,
                 versions: dict[str, str] | None = None):
        check_key(name)
        self.directory = storage.absolute(directory)
        self.name = name
        self.schema = schema
        self.config_hash = config_hash
        self.versions = versions or package_versions()
        self.keys: list[str] = []
        self.splits: list[str | None] = []  # each record's json "split" (train/test), for loaders
        self.rejects: list[dict] = []
        if storage.is_remote(self.directory):  # built in a local spool file, uploaded whole by close()
            self._tmp_path, self._file = storage.spool(name)
        else:
            Path(self.directory).mkdir(parents=True, exist_ok=True)
            self._tmp_path = storage.join(self.directory, f"{name}.{_writer_token()}.tar.tmp")
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
        self.splits.append(_split_of_record(members.get("json")))

    def close(self) -> dict:
        """Finish the tar, put it in place, then write the manifest; returns the manifest."""
        if self.manifest is not None:
            return self.manifest
        self._tar.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        tar_url = storage.join(self.directory, f"{self.name}.tar")
        size = os.path.getsize(self._tmp_path)
        if storage.is_remote(tar_url):
            try:
                self._put_once(tar_url, lambda: storage.put_file(self._tmp_path, tar_url, exclusive=True))
            finally:
                os.unlink(self._tmp_path)
        else:
            os.replace(self._tmp_path, tar_url)
        reasons = Counter(reject_reason(r["error"]) for r in self.rejects)
        manifest = {
            "shard": f"{self.name}.tar",
            "schema": {"name": self.schema.name, "version": self.schema.version},
            "count": len(self.keys),
            "keys": self.keys,
            **({"splits": self.splits} if any(self.splits) else {}),
            "status": {"ok": len(self.keys), "rejected": len(self.rejects)},
            "reject_reasons": dict(sorted(reasons.items())),
            "rejects": self.rejects,
            "bytes": size,
            "sha256": self._hash.hexdigest(),
            "config_hash": self.config_hash,
            "versions": self.versions,
        }
        data = json.dumps(manifest, indent=1, sort_keys=True).encode()
        path = manifest_path(self.directory, self.name)
        if storage.is_remote(path):
            self._put_once(path, lambda: storage.write_bytes(path, data, exclusive=True))
        else:
            storage.write_bytes(path, data)
        self.manifest = manifest
        return manifest

    def _put_once(self, url: str, put) -> None:
        """A create-only upload; if the object is already there (another writer of this shard, or
        this upload's own first try whose answer was lost) it must hold this shard's bytes."""
        try:
            put()
            return
        except FileExistsError:
            pass
        if url.endswith(".tar"):
            same = storage.sha256(url) == self._hash.hexdigest()
        else:
            same = json.loads(storage.read_bytes(url)).get("sha256") == self._hash.hexdigest()
        if not same:
            raise ShardConflict(f"{url}: another writer finished shard {self.name} first with other bytes; "
                                "its shard is kept and this one discarded")

    def abort(self) -> None:
        try:
            self._tar.close()
        finally:
            self._file.close()
        Path(self._tmp_path).unlink(missing_ok=True)

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
