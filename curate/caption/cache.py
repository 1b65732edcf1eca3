"""Captions cached by a hash of (image bytes, model identity, prompt, settings), so a re-run, a
resumed job or another job over the same images captions nothing twice. One small JSON file per
caption in a folder (a path or a URL), each written atomically (a temporary file renamed, or an
object PUT): any number of workers, on any node that sees the folder, may write at once, and two
writers of one key write the same caption."""
from __future__ import annotations

import hashlib
import json

from shards import storage


def caption_key(image: bytes, identity: dict, prompt: str) -> str:
    """The cache key of one caption: what decides the text a greedy model writes."""
    digest = hashlib.sha256(hashlib.sha256(image).digest())
    digest.update(json.dumps({"identity": identity, "prompt": prompt}, sort_keys=True).encode())
    return digest.hexdigest()


class CaptionCache:
    def __init__(self, folder: str):
        self.folder = folder

    def _url(self, key: str) -> str:
        return storage.join(self.folder, key[:2], f"{key}.json")

    def get(self, key: str) -> str | None:
        try:
            return json.loads(storage.read_bytes(self._url(key)))["caption"]
        except (OSError, ValueError, KeyError):  # absent, or unreadable: caption it again
            return None

    def put(self, key: str, caption: str) -> None:
        storage.write_bytes(self._url(key), json.dumps({"caption": caption}).encode())
