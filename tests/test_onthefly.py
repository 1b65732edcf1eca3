import numpy as np

from render.compositing.backgrounds import ProceduralBackgrounds
from shards.reader import iter_dataset
from train.compositing import OnTheFlyComposite


def test_on_the_fly_compositing_is_one_draw_and_reproducible(tmp_path):
    from ray_jobs.cli import main
    assert main(["render", "--out", str(tmp_path), "--runner", "local", "--quiet", "--set", "characters.count=2",
                 "--set", "poses_per_character=3", "--set", "resolution=[128, 192]"]) == 0
    samples = list(iter_dataset(tmp_path / "pairs"))
    transform = OnTheFlyComposite(ProceduralBackgrounds(1000), seed=5)
    first = [transform(s) for s in samples]
    again = [OnTheFlyComposite(ProceduralBackgrounds(1000), seed=5)(s) for s in samples]
    for a, b in zip(first, again):  # the same seed, key and epoch: the same sample, bit for bit
        assert np.array_equal(a["image"], b["image"]) and a["placement"] == b["placement"]
    transform.set_epoch(1)
    assert any(transform(s)["placement"] != f["placement"] for s, f in zip(samples, first))
    for out in first:  # image, mask and keypoints moved by the one draw
        assert out["image"].shape == (192, 128, 3) and out["std"].shape == (192, 128, 3)
        covered = out["bg_mask"] < 255
        kp = out["keypoints"][out["keypoints"][:, 2] > 0]
        assert len(kp) and covered[kp[:, 1].astype(int), kp[:, 0].astype(int)].mean() >= 0.9
        assert out["pose_image"][kp[:, 1].astype(int), kp[:, 0].astype(int)].any(axis=-1).all()
