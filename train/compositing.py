"""On-the-fly compositing inside a training loader (SerialGen merges its transparent renders with
backgrounds dynamically): the same compositor as the offline shards, one random draw per sample
applied to image, background mask, keypoints and pose image alike, deterministic given
(seed, sample key, epoch) so any batch can be reproduced. Its input is a decoded record, read
from the shards by the safe reader's webdataset pipeline (``shards.reader.safe_webdataset``) or by
``shards.reader.decode_safely`` in a webdataset pipeline of your own:

    from shards.reader import decode_safely, safe_webdataset, shard_error_handler

    backgrounds = ProceduralBackgrounds(10_000)          # or FolderBackgrounds("/data/backgrounds")
    dataset = safe_webdataset(urls).map(OnTheFlyComposite(backgrounds, seed=0))
    # or: wds.WebDataset(urls, shardshuffle=False, handler=shard_error_handler)
    #         .map(decode_safely).map(OnTheFlyComposite(backgrounds, seed=0))
"""
from __future__ import annotations

import hashlib

import numpy as np

from render.compositing.backgrounds import draw_background
from render.compositing.composite import CompositeConfig, composite_sample


class OnTheFlyComposite:
    def __init__(self, backgrounds, config: CompositeConfig = CompositeConfig(), seed: int = 0,
                 background_tries: int = 8):
        self.backgrounds, self.config, self.seed = backgrounds, config, seed
        self.background_tries = background_tries
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """A new draw for every sample each epoch, the same draw whenever an epoch is replayed."""
        self.epoch = epoch

    def _rng(self, key: str) -> np.random.Generator:
        digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
        return np.random.default_rng([self.seed, self.epoch, int.from_bytes(digest, "little")])

    def __call__(self, sample: dict, size: tuple[int, int] | None = None) -> dict:
        """A decoded ``synthetic_pair`` sample -> the inputs of the standardizer: ``image`` (RGB),
        ``bg_mask``, ``pose_image``, ``keypoints``, the target ``std`` and where it all came from.
        ``size`` (width, height): the frame to composite into (the render's own size by default);
        compositing straight at a training size scales the character once, with no second resize."""
        rgba, meta = sample["src.png"], sample["json"]
        rng = self._rng(sample["__key__"])
        size = tuple(size) if size is not None else (rgba.shape[1], rgba.shape[0])
        background, name, skipped = draw_background(self.backgrounds, rng, size, self.background_tries)
        out = composite_sample(rgba, meta["src"]["keypoints"], background, rng, self.config, meta["src"].get("in_frame"))
        return {"__key__": sample["__key__"], "image": out["image"], "bg_mask": out["bg_mask"],
                "pose_image": out["pose_image"], "keypoints": out["keypoints"], "std": sample["std.png"],
                "background": name, "background_skipped": skipped,
                "placement": {"scale": out["placement"].scale, "offset": out["placement"].offset}}
