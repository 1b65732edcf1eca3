"""The safe shard reader: decodes only images, json, txt and npy (``allow_pickle=False``); never
unpickles; refuses member names with path parts, links and unknown member types; names the shard
that is truncated or corrupt. Use it, not a generic decoder, on data you did not write yourself.

The same rules inside any webdataset pipeline (webdataset is imported only when these are used):

    dataset = safe_webdataset(urls).map(OnTheFlyComposite(backgrounds))   # every rule, truncation included
    dataset = wds.WebDataset(urls, shardshuffle=False, handler=shard_error_handler).map(decode_safely)
    dataset = wds.WebDataset(urls, shardshuffle=False).decode(safe_handler, pre=[])

``decode_safely`` (a ``.map`` function) and ``safe_handler`` (a ``.decode`` handler) refuse every member
type outside SAFE_EXTS, so webdataset's own pickle and torch decoders are never reached.
``shard_error_handler`` turns webdataset's tar errors into a ShardError naming the shard. webdataset's
own tar reading, though, takes a shard cut at a member boundary for a complete one (the rest of the
shard is lost without an error) and skips links silently; ``safe_webdataset`` reads the tars with
this reader instead, so it refuses those too.
"""
from __future__ import annotations

import functools
import io
import json
import re
import tarfile
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from PIL import Image

from shards import storage
from shards.encoding import decode_png

IMAGE_EXTS = {"png", "jpg", "jpeg", "webp"}
SAFE_EXTS = IMAGE_EXTS | {"json", "txt", "npy"}


class ShardError(Exception):
    """A shard that cannot be trusted: corrupt, truncated or carrying unsafe members."""


def _is_safe_ext(ext: str) -> bool:
    return ext.rsplit(".", 1)[-1].lower() in SAFE_EXTS


def split_member_name(shard: str, name: str) -> tuple[str, str]:
    """``key.ext`` -> (key, ext), refusing anything that could escape or execute."""
    if "/" in name or "\\" in name or name.startswith("."):
        raise ShardError(f"{shard}: member {name!r} has path parts; refusing the shard")
    key, dot, ext = name.partition(".")
    if not dot or not key:
        raise ShardError(f"{shard}: member {name!r} is not KEY.EXT")
    if not _is_safe_ext(ext):
        raise ShardError(f"{shard}: member {name!r} has an unsafe or unknown type "
                         f"(allowed: {', '.join(sorted(SAFE_EXTS))}); refusing the shard")
    return key, ext


def decode_member(ext: str, data: bytes):
    """Decode one member: images to uint8 arrays (mode kept: RGBA stays 4 channels), json, text, npy."""
    kind = ext.rsplit(".", 1)[-1].lower()
    if kind == "png":
        pixels = decode_png(data)  # the writer's own PNGs, ~2x faster than Pillow; None for others
        if pixels is not None:
            return pixels
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


def _decode_named(shard: str, name: str, ext: str, data: bytes):
    """decode_member, a failure named as the shard's and the member's."""
    try:
        return decode_member(ext, data)
    except ShardError:
        raise
    except Exception as error:  # a corrupt image or json is a corrupt shard
        raise ShardError(f"{shard}: member {name!r} does not decode: {error}") from error


class _CountingReader:
    """A file object that counts the bytes read from it (the end-of-archive check on any stream)."""

    def __init__(self, raw):
        self.raw, self.count = raw, 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.count += len(data)
        return data

    def holds_at_least(self, total: int) -> bool:
        while self.count < total and self.read(min(1 << 16, total - self.count)):
            pass
        return self.count >= total


def _read_records(shard: str, fileobj, decode: bool) -> Iterator[dict]:
    """The records of one uncompressed tar stream, with every rule of the reader."""
    record: dict | None = None
    stream = _CountingReader(fileobj)
    with tarfile.open(fileobj=stream, mode="r|") as tar:
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
            record[ext] = _decode_named(shard, info.name, ext, data) if decode else data
        if not stream.holds_at_least(tar.offset + 2 * tarfile.BLOCKSIZE):
            raise ShardError(f"{shard}: truncated (no end-of-archive marker after {tar.offset} bytes)")
    if record is not None:
        yield record


def iter_shard(path: str | Path, decode: bool = True) -> Iterator[dict]:
    """Yield the records of one shard (a path or a URL, streamed) in order; raises ShardError
    naming the shard on any problem."""
    shard = str(path)
    try:
        with storage.open_read(shard) as fileobj:
            yield from _read_records(shard, fileobj, decode)
    except (tarfile.TarError, EOFError, OSError) as error:
        raise ShardError(f"{shard}: truncated or corrupt tar ({error})") from error


def shard_paths(directory: str | Path) -> list[str]:
    """The complete shards of a dataset directory (a path or a URL), in name order."""
    return storage.glob(directory, "*.tar")


def iter_dataset(directory: str | Path, decode: bool = True) -> Iterator[dict]:
    for path in shard_paths(directory):
        yield from iter_shard(path, decode=decode)


# --- the same rules inside webdataset pipelines -------------------------------------------------

_META = re.compile(r"__\w+__")  # webdataset's entries: __key__, __url__, __local_path__ …


def decode_safely(sample: dict) -> dict:
    """A raw webdataset sample -> the reader's record, for ``wds.WebDataset(urls).map(decode_safely)``.

    Every member is checked as ``{__key__}.{ext}`` by split_member_name (path parts, types outside
    SAFE_EXTS) and decoded by decode_member; ``__key__``, ``__url__`` and webdataset's other
    ``__name__`` entries pass through. Any problem is a ShardError naming the shard url and member."""
    shard = str(sample.get("__url__", "<webdataset sample>"))
    key = sample.get("__key__")
    record = {}
    for ext, value in sample.items():
        if _META.fullmatch(ext):
            record[ext] = value
            continue
        name = f"{key}.{ext}"
        if not isinstance(key, str):
            raise ShardError(f"{shard}: member {ext!r} of a sample without a __key__")
        split_member_name(shard, name)
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError(f"{shard}: member {name!r} is already decoded ({type(value).__name__}); "
                            "decode_safely takes the raw samples of a tar reader")
        record[ext] = _decode_named(shard, name, ext, bytes(value))
    return record


def safe_handler(key: str, data: bytes):
    """A webdataset decoder handler, for ``wds.WebDataset(urls).decode(safe_handler, pre=[])``.

    webdataset calls it as ``f(".ext", data)``. It decodes the safe types by decode_member and raises
    ShardError for every other one, so webdataset's default handlers (pickle, torch.load …) are
    never reached. It sees only the extension: the key is checked by decode_safely and
    safe_webdataset, not here. Pass ``pre=[]`` as well, or webdataset gunzips ``*.gz`` members
    before this handler sees them (the reader refuses them).  A webdataset Decoder reports the
    refusal as a DecodingError caused by the ShardError; ``.decode(..., handler=shard_error_handler)``
    makes it a ShardError naming the shard and member."""
    ext = key[1:] if key.startswith(".") else key
    if not _is_safe_ext(ext):
        raise ShardError(f"member type {ext!r} is unsafe or unknown (allowed: {', '.join(sorted(SAFE_EXTS))}); "
                         "refused, not passed on to webdataset's default decoders")
    return decode_member(ext, data)


def _failed_url(exn: Exception) -> str | None:
    """The shard url webdataset's tar stages append to an exception's args as ``(…, stream, url)``."""
    args = getattr(exn, "args", ())
    if len(args) >= 3 and isinstance(args[-1], str) and hasattr(args[-2], "read"):
        return args[-1]
    return None


def shard_error_handler(exn: Exception) -> bool:
    """An exception handler for webdataset (``wds.WebDataset(urls, handler=shard_error_handler)``,
    ``.decode(…, handler=…)``, ``wds.tarfile_to_samples(handler=…)``): raises every shard problem
    as a ShardError naming the shard, a truncated or corrupt tar as "truncated or corrupt".

    webdataset's own tar reading raises nothing for a shard cut at a member boundary; use
    safe_webdataset for the reader's full truncation check."""
    if isinstance(exn, ShardError):
        raise exn
    if type(exn).__name__ == "DecodingError" and hasattr(exn, "url"):  # webdataset.autodecode
        name = f"{exn.key}.{exn.k}"
        cause = exn.__cause__
        if isinstance(cause, ShardError):
            raise ShardError(f"{exn.url}: member {name!r} is refused: {cause}") from exn
        raise ShardError(f"{exn.url}: member {name!r} does not decode: {cause}") from exn
    url = _failed_url(exn)
    if url is None:  # not yet at the stage that knows the shard (it adds the url and asks again)
        raise exn
    message = str(exn.args[0]).split(" @ ")[0] if exn.args else type(exn).__name__
    if isinstance(exn, (tarfile.TarError, EOFError)):
        raise ShardError(f"{url}: truncated or corrupt tar ({message})") from exn
    raise ShardError(f"{url}: {message}") from exn


def _safe_tar_samples(src: Iterable, decode: bool = True) -> Iterator[dict]:
    """Pipeline stage: shard urls (``{"url": …}`` or str) -> the reader's records, with ``__url__``.
    Paths and storage URLs (s3://, gs://, file://) stream through shards.storage (retried ranged
    reads); ``pipe:`` and http(s) urls through webdataset's gopen, as in wds.WebDataset."""
    from webdataset import gopen

    for item in src:
        url = item["url"] if isinstance(item, dict) else item
        by_webdataset = url.startswith(("pipe:", "http://", "https://"))
        try:
            with (gopen(url, "rb") if by_webdataset else storage.open_read(url)) as fileobj:
                for record in _read_records(url, fileobj, decode):
                    record["__url__"] = url
                    yield record
        except (tarfile.TarError, EOFError, OSError) as error:
            raise ShardError(f"{url}: truncated or corrupt tar ({error})") from error


def safe_webdataset(urls, *, decode: bool = True, shardshuffle: int = 0, resampled: bool = False,
                    seed: int = 0, nodesplitter=None, workersplitter=None):
    """A webdataset pipeline (``.map``, ``.shuffle``, ``.batched`` … as on wds.WebDataset) that reads
    its shards with this reader: the reader's records plus ``__url__``, every rule applied,
    truncation anywhere named. ``decode=False`` gives the checked members' bytes.

    urls: as for wds.WebDataset ("shard-{000000..000009}.tar", a list, pipe:/http urls).
    shardshuffle: a shard shuffle buffer (0: shard order kept). resampled: draw shards with
    replacement, endlessly (as ``wds.WebDataset(resampled=True)``). The splitters default to
    wds.split_by_node and wds.split_by_worker (not used when resampled)."""
    import webdataset as wds

    shards = wds.ResampledShards(urls, seed=seed) if resampled else wds.SimpleShardList(urls)
    pipeline = wds.FluidWrapper(shards)
    if not resampled:
        pipeline.append(nodesplitter or wds.split_by_node)
        pipeline.append(workersplitter or wds.split_by_worker)
        if shardshuffle:
            pipeline.append(wds.detshuffle(shardshuffle, seed=seed))
    pipeline.append(functools.partial(_safe_tar_samples, decode=decode))
    return pipeline
