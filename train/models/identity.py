"""What the three saved-model layouts (standardizer, router, personalizer) share; no torch: the
identity json read and checked before any work, and the hash of the weight files that records and
lineage carry."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path


def read_identity_file(path: str | Path, option: str, what: str, identity_file: str, model_name: str, fmt: int,
                       written_by: str, error: type, hint=None) -> dict:
    """The identity json of the folder at ``path``, checked to be ``model_name`` at layout ``fmt``;
    otherwise ``error`` naming the option (``--checkpoint``), what was expected (``what``) and what
    writes one (``written_by``). ``hint(names in the folder)`` may add advice to the not-found message."""
    folder = Path(path)
    if not folder.is_dir():
        raise error(f"{option} {folder}: no such folder; give a folder written by {written_by}")
    try:
        identity = json.loads((folder / identity_file).read_text())
    except (OSError, ValueError):
        found = sorted(p.name for p in folder.iterdir())[:8]
        advice = hint(found) if hint else ""
        raise error(f"{option} {folder} is not {what}: it has no readable {identity_file} (it holds {found}){advice}") \
            from None
    if identity.get("model") != model_name:
        raise error(f"{option} {folder} is a {identity.get('model')!r} model, not a {model_name}")
    if identity.get("format") != fmt:
        raise error(f"{option} {folder}: layout format {identity.get('format')} (this pairforge reads format {fmt}); "
                    f"use the pairforge version that wrote it")
    return identity


def files_hash(folder: str | Path, modules: tuple[str, ...]) -> str:
    """sha256 (16 hex) of the ``*.safetensors`` files of ``modules`` (subfolders) under ``folder``,
    each named by its module and file name, read in 4 MiB blocks."""
    digest = hashlib.sha256()
    for module in modules:
        for file in sorted((Path(folder) / module).glob("*.safetensors")):
            digest.update(f"{module}/{file.name}".encode())
            with open(file, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 22), b""):
                    digest.update(block)
    return digest.hexdigest()[:16]
