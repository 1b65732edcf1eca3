"""Messages between a renderer client and its worker process: a JSON header and raw numpy arrays
over a pipe. No pickle: arrays travel as bytes with a whitelisted dtype and a shape, so a worker
(which runs third-party importers on untrusted assets) can never make its client execute code."""
from __future__ import annotations

import json
import os
import select
import struct
import time

import numpy as np

DTYPES = {"uint8": np.uint8, "float32": np.float32, "float64": np.float64}
LENGTH = struct.Struct("<Q")
MAX_HEADER = 64 << 20


class WorkerGone(EOFError):
    """The other end closed the pipe (the process exited or was killed)."""


class WorkerTimeout(TimeoutError):
    """No complete message arrived before the deadline."""


def send(fd: int, header: dict, arrays: dict[str, np.ndarray] | None = None) -> None:
    arrays = {name: np.ascontiguousarray(a) for name, a in (arrays or {}).items()}
    for name, a in arrays.items():
        if a.dtype.name not in DTYPES:
            raise TypeError(f"array {name!r}: dtype {a.dtype} cannot be sent")
    header = {**header, "arrays": [[name, a.dtype.name, list(a.shape)] for name, a in arrays.items()]}
    text = json.dumps(header).encode()
    _write_all(fd, LENGTH.pack(len(text)) + text)
    for a in arrays.values():
        _write_all(fd, memoryview(a).cast("B"))


def receive(fd: int, deadline: float | None = None) -> tuple[dict, dict[str, np.ndarray]]:
    """The next message; ``deadline`` is a time.monotonic() value (None waits for ever)."""
    (size,) = LENGTH.unpack(_read_exact(fd, LENGTH.size, deadline))
    if size > MAX_HEADER:
        raise ValueError(f"message header of {size} bytes: not a pairforge worker message")
    header = json.loads(_read_exact(fd, size, deadline))
    arrays = {}
    for name, dtype, shape in header.pop("arrays", []):
        if dtype not in DTYPES:
            raise ValueError(f"array {name!r}: dtype {dtype} is not allowed")
        count = int(np.prod(shape, dtype=np.int64))
        raw = _read_exact(fd, count * np.dtype(DTYPES[dtype]).itemsize, deadline)
        arrays[name] = np.frombuffer(raw, dtype=DTYPES[dtype]).reshape(shape)
    return header, arrays


def _write_all(fd: int, data) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BrokenPipeError:
            raise WorkerGone("the worker's pipe is closed") from None
        view = view[written:]


def _read_exact(fd: int, size: int, deadline: float | None) -> bytearray:
    out = bytearray()
    while len(out) < size:
        if deadline is not None:
            left = deadline - time.monotonic()
            poller = select.poll()  # not select(): that fails on descriptors >= 1024
            poller.register(fd, select.POLLIN | select.POLLHUP)
            if left <= 0 or not poller.poll(left * 1000):
                raise WorkerTimeout("no reply before the deadline")
        chunk = os.read(fd, min(size - len(out), 1 << 22))
        if not chunk:
            raise WorkerGone("the worker's pipe closed mid-message" if out else "the worker's pipe is closed")
        out += chunk
    return out
