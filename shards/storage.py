"""The one filesystem layer: every path a job reads or writes (shards, manifests, plans, resolved
configs, characters, backgrounds, pose tables) goes through here, so a plain path, ``file://``,
``s3://`` and ``gs://`` behave alike. Local paths stay plain ``os`` calls; URLs go through fsspec.

Why fsspec and not pyarrow.fs: fsspec is pure Python and imports in ~60 ms (pyarrow is a ~100 MB
wheel, and shards/ is imported by every training job); its s3fs and gcsfs back-ends read
credentials and endpoints from the standard places (environment, ``~/.aws``, Google's ADC) and
expose S3's create-only PUT (``If-None-Match: *``) that makes concurrent shard writers safe;
webdataset, PyTorch and Hugging Face datasets speak fsspec URLs too. pyarrow.fs has no exclusive
create, and its retries can be neither counted nor tuned per call.

The API (for jobs and training loaders alike):

- ``open_read(url)``: a binary stream; an object is read in blocks of ranged GETs, so a shard
  streams without being downloaded first, and each block is retried on its own;
- ``read_bytes``, ``write_bytes(url, data, exclusive=False)``, ``put_file(local, url, exclusive)``:
  whole objects; a write is atomic (a local temporary file renamed into place; on object storage a
  PUT is visible only once complete) and ``exclusive`` refuses to replace an existing object
  (``FileExistsError``: S3's conditional PUT, a hard link on disk);
- ``glob(directory, pattern)``, ``find(directory)``, ``exists``, ``is_dir``, ``size``, ``remove``,
  ``remove_tree``; ``join``, ``name``, ``parent``, ``absolute``, ``is_remote`` for URLs and paths;
- ``check_access(url, write)``: the permanent problems (a missing bucket, denied access) found
  before any work, as a StorageError naming the URL and what to check.

Transient errors (throttling, 5xx, timeouts, connection resets) are retried here with exponential
backoff and counted (``retry_counts()``); s3fs's and botocore's own retries are turned off so that
every retry is seen. A missing object is a FileNotFoundError naming its URL. Settings
(``configure``) live in the environment, so processes started from this one (embedded Ray
workers, Blender workers) inherit them: ``AWS_ENDPOINT_URL`` (the standard variable) for an
S3-compatible endpoint, ``PAIRFORGE_STORAGE_ATTEMPTS``, ``_BACKOFF_S`` and ``_TIMEOUT_S``.
Credentials are never read or written here: the libraries find them."""
from __future__ import annotations

import errno
import hashlib
import io
import os
import random
import shutil
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import fsspec

LOCAL_PROTOCOLS = ("", "file", "local")
BLOCK_BYTES = 8 << 20  # one ranged GET of a streamed object
ENV = {"endpoint_url": "AWS_ENDPOINT_URL", "attempts": "PAIRFORGE_STORAGE_ATTEMPTS",
       "backoff_s": "PAIRFORGE_STORAGE_BACKOFF_S", "timeout_s": "PAIRFORGE_STORAGE_TIMEOUT_S"}

# Error classes (by name, from botocore, aiohttp, s3fs, gcsfs, requests) that mean "try again".
_TRANSIENT_NAMES = {"HTTPClientError", "ReadTimeoutError", "ConnectTimeoutError", "EndpointConnectionError",
                    "ConnectionClosedError", "IncompleteRead", "ClientPayloadError", "ServerDisconnectedError",
                    "ResponseParserError", "FSTimeoutError", "ServerTimeoutError", "ClientOSError",
                    "ChunkedEncodingError", "RetryError"}
# Words of the server's error that mean the same (S3 and GCS codes and HTTP statuses).
_TRANSIENT_WORDS = ("SlowDown", "Throttl", "ServiceUnavailable", "Service Unavailable", "InternalError",
                    "RequestTimeout", "Too Many Requests", "reduce your request rate", "503", "500", "429")
_PERMANENT = (FileNotFoundError, PermissionError, FileExistsError, IsADirectoryError, NotADirectoryError)


class StorageError(RuntimeError):
    """A storage problem that retrying cannot fix; the message names the URL and what to check."""


@dataclass(frozen=True)
class Settings:
    endpoint_url: str | None = None  # an S3-compatible endpoint (MinIO, Ceph, a local server)
    attempts: int = 6                # tries of one request before its error is raised
    backoff_s: float = 0.2           # the first wait between tries; doubles up to 10 s
    timeout_s: float = 60.0          # connect and read timeout of one request


def settings() -> Settings:
    env = {field: os.environ.get(var) for field, var in ENV.items()}
    return Settings(endpoint_url=env["endpoint_url"] or None,
                    attempts=int(env["attempts"] or Settings.attempts),
                    backoff_s=float(env["backoff_s"] or Settings.backoff_s),
                    timeout_s=float(env["timeout_s"] or Settings.timeout_s))


def configure(endpoint_url: str | None = None, attempts: int | None = None, backoff_s: float | None = None,
              timeout_s: float | None = None) -> Settings:
    """Set storage settings for this process and the processes it starts (the environment)."""
    given = {"endpoint_url": endpoint_url, "attempts": attempts, "backoff_s": backoff_s, "timeout_s": timeout_s}
    for field, value in given.items():
        if value is not None:
            os.environ[ENV[field]] = str(value)
    return settings()


_retries: Counter = Counter()  # operation -> retries in this process
_retries_lock = threading.Lock()


def retry_counts() -> dict[str, int]:
    """Retries of transient errors in this process so far, per operation (get, put, list, head)."""
    with _retries_lock:
        return dict(_retries)


# --- URLs and paths -------------------------------------------------------------------------------

def protocol(url: str | os.PathLike) -> str:
    text = os.fspath(url)
    return text.split("://", 1)[0].lower() if "://" in text else ""


def is_remote(url: str | os.PathLike) -> bool:
    return protocol(url) not in LOCAL_PROTOCOLS


def _local(url: str | os.PathLike) -> str:
    text = os.fspath(url)
    return text.split("://", 1)[1] if protocol(text) in ("file", "local") else text


def absolute(url: str | os.PathLike) -> str:
    """A URL as given (without a trailing slash); a local path or file:// URL made absolute."""
    return os.fspath(url).rstrip("/") if is_remote(url) else str(Path(_local(url)).resolve())


def join(base: str | os.PathLike, *parts: str) -> str:
    if not is_remote(base):
        return os.path.join(_local(base), *parts)
    return "/".join([os.fspath(base).rstrip("/"), *(p.strip("/") for p in parts)])


def name(url: str | os.PathLike) -> str:
    return os.fspath(url).rstrip("/").rsplit("/", 1)[-1]


def parent(url: str | os.PathLike) -> str:
    if not is_remote(url):
        return str(Path(_local(url)).parent)
    return os.fspath(url).rstrip("/").rsplit("/", 1)[0]


# --- the remote filesystems ------------------------------------------------------------------------

def _filesystem(url: str):
    """(fsspec filesystem, its path) for a remote URL. On s3 this layer does all the retrying."""
    options: dict = {}
    if protocol(url) in ("s3", "s3a"):
        current = settings()
        options = {"endpoint_url": current.endpoint_url, "use_listings_cache": False,
                   "config_kwargs": {"retries": {"total_max_attempts": 1}, "connect_timeout": current.timeout_s,
                                     "read_timeout": current.timeout_s}}
    try:
        fs, path = fsspec.core.url_to_fs(url, **options)
    except ImportError as error:
        raise StorageError(f"{url}: {protocol(url)}:// needs its fsspec back-end: pip install 'pairforge[s3]' "
                           f"({error})") from None
    if hasattr(fs, "retries"):
        fs.retries = 1  # s3fs retries inside each call, unseen; this layer retries and counts instead
    return fs, path


def is_transient(error: BaseException) -> bool:
    """Whether trying again may succeed: throttling, server errors, timeouts, dropped connections."""
    if isinstance(error, _PERMANENT):
        return False
    if isinstance(error, (TimeoutError, ConnectionError)):
        return True
    if {cls.__name__ for cls in type(error).__mro__} & _TRANSIENT_NAMES:
        return True
    return isinstance(error, OSError) and any(word in str(error) for word in _TRANSIENT_WORDS)


def _retrying(operation: str, url: str, call):
    """``call()``, retried with exponential backoff (and jitter) on transient errors, counted; a
    missing object or denied access is raised at once, naming ``url``."""
    current = settings()
    for attempt in range(1, current.attempts + 1):
        try:
            return call()
        except FileNotFoundError:
            raise FileNotFoundError(errno.ENOENT, "no such file or object", url) from None
        except PermissionError as error:
            raise PermissionError(errno.EACCES, f"access denied ({error}); check the credentials "
                                  "and the bucket's policy", url) from None
        except Exception as error:
            if not is_transient(error) or attempt == current.attempts:
                raise
            with _retries_lock:
                _retries[operation] += 1
            time.sleep(min(current.backoff_s * 2 ** (attempt - 1), 10.0) * random.uniform(0.5, 1.0))


# --- reading -----------------------------------------------------------------------------------------

class _RangedReader(io.RawIOBase):
    """A remote object read front to back in blocks of ranged GETs, each retried on its own: the
    reader streams a shard without downloading it first, and a dropped connection costs one block."""

    def __init__(self, url: str):
        self.url, self.block = url, BLOCK_BYTES
        self._fs, self._path = _filesystem(url)
        self.size = _retrying("head", url, lambda: self._fs.size(self._path))
        self._pos, self._buffer, self._buffer_at = 0, b"", 0

    def readable(self) -> bool:
        return True

    def readinto(self, target) -> int:
        if self._pos >= self.size:
            return 0
        offset = self._pos - self._buffer_at
        if not 0 <= offset < len(self._buffer):
            start, end = self._pos, min(self._pos + self.block, self.size)
            self._buffer = _retrying("get", self.url, lambda: self._fs.cat_file(self._path, start=start, end=end))
            self._buffer_at, offset = start, 0
            if not self._buffer:
                raise OSError(f"{self.url}: object ended at {start} of {self.size} bytes")
        n = min(len(target), len(self._buffer) - offset)
        target[:n] = self._buffer[offset:offset + n]
        self._pos += n
        return n


def open_read(url: str | os.PathLike):
    """A binary stream of ``url``: a local file, or a remote object read in retried blocks."""
    if not is_remote(url):
        return open(_local(url), "rb")
    return io.BufferedReader(_RangedReader(os.fspath(url)), buffer_size=1 << 16)


def read_bytes(url: str | os.PathLike) -> bytes:
    if not is_remote(url):
        return Path(_local(url)).read_bytes()
    fs, path = _filesystem(os.fspath(url))
    return _retrying("get", os.fspath(url), lambda: fs.cat_file(path))


def read_text(url: str | os.PathLike) -> str:
    return read_bytes(url).decode("utf-8")


# --- writing ------------------------------------------------------------------------------------------

def _token() -> str:
    return f"{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _place_local(tmp: str, path: str, exclusive: bool) -> None:
    """Move a finished temporary file into place: renamed over, or linked only if nothing is there."""
    if not exclusive:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    finally:
        os.unlink(tmp)


def write_bytes(url: str | os.PathLike, data: bytes, exclusive: bool = False) -> None:
    """Write a whole file or object atomically; ``exclusive``: FileExistsError if it exists."""
    if not is_remote(url):
        path = _local(url)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = f"{path}.{_token()}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        _place_local(tmp, path, exclusive)
        return
    fs, path = _filesystem(os.fspath(url))
    _retrying("put", os.fspath(url),
              lambda: fs.pipe_file(path, data, mode="create" if exclusive else "overwrite"))


def put_file(local_file: str | os.PathLike, url: str | os.PathLike, exclusive: bool = False) -> None:
    """Upload (or copy) a finished local file to ``url`` atomically: an object becomes visible only
    once its upload (single or multipart) completes. ``exclusive``: FileExistsError if it exists."""
    if not is_remote(url):
        path = _local(url)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = f"{path}.{_token()}.tmp"
        shutil.copyfile(local_file, tmp)
        _place_local(tmp, path, exclusive)
        return
    fs, path = _filesystem(os.fspath(url))
    _retrying("put", os.fspath(url),
              lambda: fs.put_file(os.fspath(local_file), path, mode="create" if exclusive else "overwrite"))


def makedirs(url: str | os.PathLike) -> None:
    """Create a local folder; object stores have no folders (a prefix exists once it holds an object)."""
    if not is_remote(url):
        os.makedirs(_local(url), exist_ok=True)


def remove(url: str | os.PathLike) -> None:
    """Remove a file or object if it is there."""
    if not is_remote(url):
        Path(_local(url)).unlink(missing_ok=True)
        return
    fs, path = _filesystem(os.fspath(url))
    try:
        _retrying("put", os.fspath(url), lambda: fs.rm_file(path))
    except FileNotFoundError:
        pass


def remove_tree(url: str | os.PathLike) -> None:
    """Remove a folder, or every object under a prefix."""
    if not is_remote(url):
        shutil.rmtree(_local(url), ignore_errors=True)
        return
    for found in find(url):
        remove(found)


# --- listing -----------------------------------------------------------------------------------------

def exists(url: str | os.PathLike) -> bool:
    if not is_remote(url):
        return os.path.exists(_local(url))
    fs, path = _filesystem(os.fspath(url))
    return _retrying("head", os.fspath(url), lambda: fs.exists(path))


def is_dir(url: str | os.PathLike) -> bool:
    """A local folder, or a prefix that holds at least one object."""
    if not is_remote(url):
        return os.path.isdir(_local(url))
    fs, path = _filesystem(os.fspath(url))
    return bool(_retrying("list", os.fspath(url), lambda: fs.isdir(path)))


def size(url: str | os.PathLike) -> int | None:
    """Bytes of a file or object; None if it is not there."""
    if not is_remote(url):
        try:
            return os.path.getsize(_local(url))
        except OSError:
            return None
    fs, path = _filesystem(os.fspath(url))
    try:
        return _retrying("head", os.fspath(url), lambda: fs.size(path))
    except FileNotFoundError:
        return None


def glob(directory: str | os.PathLike, pattern: str) -> list[str]:
    """Files (or objects) of ``directory`` matching ``pattern`` (``*.tar``), sorted, as paths or URLs."""
    if not is_remote(directory):
        return sorted(str(p) for p in Path(_local(directory)).glob(pattern))
    fs, path = _filesystem(os.fspath(directory))
    found = _retrying("list", os.fspath(directory), lambda: fs.glob(f"{path.rstrip('/')}/{pattern}"))
    return sorted(fs.unstrip_protocol(p) for p in found)


def find(directory: str | os.PathLike) -> list[str]:
    """Every file (or object) under ``directory``, recursively, sorted, as paths or URLs."""
    if not is_remote(directory):
        return sorted(str(p) for p in Path(_local(directory)).rglob("*") if p.is_file())
    fs, path = _filesystem(os.fspath(directory))
    found = _retrying("list", os.fspath(directory), lambda: fs.find(path))
    return sorted(fs.unstrip_protocol(p) for p in found)


def sha256(url: str | os.PathLike) -> str:
    """The sha256 of a file or object, streamed."""
    digest = hashlib.sha256()
    with open_read(url) as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def spool(prefix: str) -> tuple[str, object]:
    """A local temporary file to build an object in before its upload: (path, open binary file)."""
    handle = tempfile.NamedTemporaryFile(prefix=f"pairforge-{prefix}.", suffix=".tmp", delete=False)
    return handle.name, handle


# --- checks before any work --------------------------------------------------------------------------

def check_access(url: str | os.PathLike, write: bool = False) -> None:
    """Stop before any work on a URL that cannot be used: a missing bucket, denied access, an
    unreachable endpoint. ``write``: also write and remove a small probe object."""
    if not is_remote(url):
        return
    url = os.fspath(url)
    fs, path = _filesystem(url)
    bucket = path.split("/", 1)[0]
    endpoint = settings().endpoint_url if protocol(url) in ("s3", "s3a") else None
    where = f" at {endpoint}" if endpoint else ""
    try:
        _retrying("list", url, lambda: fs.ls(bucket, detail=False))
        if write:
            probe = join(url, f"_pairforge_write_check.{_token()}")
            write_bytes(probe, b"")
            remove(probe)
    except FileNotFoundError:
        raise StorageError(f"{url}: the bucket {bucket!r} does not exist{where}; check the URL, and the "
                           "endpoint (storage.endpoint_url or AWS_ENDPOINT_URL) for an S3-compatible server") from None
    except PermissionError as error:
        raise StorageError(f"{url}: access denied{where}; check the credentials (AWS_ACCESS_KEY_ID/"
                           "AWS_PROFILE or ~/.aws/credentials for s3://, GOOGLE_APPLICATION_CREDENTIALS for gs://) "
                           f"and the bucket's policy ({error.strerror})") from None
    except StorageError:
        raise
    except Exception as error:
        raise StorageError(f"{url}: cannot reach the storage{where} ({type(error).__name__}: {error}); check the "
                           "endpoint and the network") from None
