"""The safe shard reader: decodes only images, json, txt and npy (``allow_pickle=False``); never
unpickles; refuses member names with path parts, links and unknown member types; names the shard
that is truncated or corrupt. Use it, not a generic decoder, on data you did not write yourself."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

IMAGE_EXTS = {"png", "jpg", "jpeg", "webp"}
SAFE_EXTS = IMAGE_EXTS | {"json", "txt", "npy"}


class ShardError(Exception):
    """A shard that cannot be trusted: corrupt, truncated or carrying unsafe members."""


def split_member_name(shard: str, name: str) -> tuple[str, str]:
    """``key.ext`` -> (key, ext), refusing anything that could escape or execute."""
    if "/" in name or "\\" in name or name.startswith("."):
        raise ShardError(f"{shard}: member {name!r} has path parts; refusing the shard")
    key, dot, ext = name.partition(".")
    if not dot or not key:
        raise ShardError(f"{shard}: member {name!r} is not KEY.EXT")
    if ext.rsplit(".", 1)[-1].lower() not in SAFE_EXTS:
        raise ShardError(f"{shard}: member {name!r} has an unsafe or unknown type "
                         f"(allowed: {', '.join(sorted(SAFE_EXTS))}); refusing the shard")
    return key, ext


def decode_member(ext: str, data: bytes):
    """Decode one member: images to uint8 arrays (mode kept: RGBA stays 4 channels), json, text, npy."""
    kind = ext.rsplit(".", 1)[-1].lower()
    if kind in IMAGE_EXTS:
        with Image.open(io.BytesIO(data)) as image:
            if image.mode not in ("RGB", "RGBA", "L"):
                image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
            return np.asarray(image)
    if kind == "json":
        return json.loads(data)
    if kind == "txt":
        return data.decode("utf-8")
    if kind == "npy":
        return np.load(io.BytesIO(data), allow_pickle=False)
    raise ShardError(f"cannot decode member type {ext!r}")


def iter_shard(path: str | Path, decode: bool = True) -> Iterator[dict]:
    """Yield the records of one shard in order; raises ShardError naming the shard on any problem."""
    shard = str(path)
    record: dict | None = None
    try:
        with tarfile.open(shard, mode="r|") as tar:
            for info in tar:
                if not info.isfile():
                    raise ShardError(f"{shard}: member {info.name!r} is not a regular file "
                                     "(links and devices are refused)")
                key, ext = split_member_name(shard, info.name)
                data = tar.extractfile(info).read()
                if len(data) != info.size:
                    raise ShardError(f"{shard}: truncated inside member {info.name!r}")
                if record is not None and record["__key__"] != key:
                    yield record
                    record = None
                if record is None:
                    record = {"__key__": key}
                if ext in record:
                    raise ShardError(f"{shard}: member {info.name!r} appears twice")
                try:
                    record[ext] = decode_member(ext, data) if decode else data
                except ShardError:
                    raise
                except Exception as error:  # a corrupt image or json is a corrupt shard
                    raise ShardError(f"{shard}: member {info.name!r} does not decode: {error}") from error
            if Path(shard).stat().st_size < tar.offset + 2 * tarfile.BLOCKSIZE:
                raise ShardError(f"{shard}: truncated (no end-of-archive marker after {tar.offset} bytes)")
    except (tarfile.TarError, EOFError, OSError) as error:
        raise ShardError(f"{shard}: truncated or corrupt tar ({error})") from error
    if record is not None:
        yield record


def shard_paths(directory: str | Path) -> list[Path]:
    """The complete shards of a dataset directory, in name order."""
    return sorted(Path(directory).glob("*.tar"))


def iter_dataset(directory: str | Path, decode: bool = True) -> Iterator[dict]:
    for path in shard_paths(directory):
        yield from iter_shard(path, decode=decode)
