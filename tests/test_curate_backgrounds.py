"""pairforge curate backgrounds: unreadable, tiny, blank and duplicate images pruned with
reasons; the kept folder is one compositing reads."""
import json

import numpy as np
import pytest
from PIL import Image

from curate.backgrounds import BackgroundJobConfig
from ray_jobs.curation import run_curate_backgrounds
from ray_jobs.jobs import RunOptions
from shards.stage import reject_reason
from tests.tools.curation_corpus import jpeg


@pytest.mark.slow
def test_backgrounds_are_pruned_once_with_reasons(tmp_path):
    import skimage.data
    from render.compositing.backgrounds import FolderBackgrounds

    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    coffee, rocket = skimage.data.coffee(), skimage.data.rocket()
    (folder / "coffee.jpg").write_bytes(jpeg(coffee))
    (folder / "sub" / "rocket.jpg").write_bytes(jpeg(rocket))
    (folder / "coffee-copy.png").write_bytes(jpeg(np.asarray(Image.fromarray(coffee).resize((450, 300))), 60))
    (folder / "grey.jpg").write_bytes(jpeg(np.full((400, 600, 3), 128, np.uint8)))
    (folder / "tiny.jpg").write_bytes(jpeg(coffee[:100, :100]))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    summary = run_curate_backgrounds(BackgroundJobConfig(min_side=256), str(folder), str(tmp_path / "out"),
                                     RunOptions(runner="local", progress=False))
    got = {}
    for manifest in sorted((tmp_path / "out").glob("*/shard-*.json")):
        for reject in json.loads(manifest.read_text())["rejects"]:
            got[reject["source"].rsplit("/", 1)[-1]] = reject_reason(reject["error"])
    assert got == {"coffee-copy.png": "duplicate", "grey.jpg": "blank", "tiny.jpg": "size", "broken.jpg": "decode"}
    assert summary.done == 2
    assert len(FolderBackgrounds(tmp_path / "out" / "kept")) == 2
