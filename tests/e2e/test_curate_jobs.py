"""The curation jobs end to end: ``pairforge curate photos`` on the embedded Ray (the stage and
the duplicate filter run as Ray workers; a duplicate in another shard is still found), the same
verdicts as the local runner, a re-run skips every finished shard, and `inspect` accepts the
photo shards."""
import json
import re

import pytest
import skimage.data

from ray_jobs.cli import main
from shards.inspect import inspect_dataset
from tests.tools.curation_corpus import astronaut, jpeg, photo_shards, reencoded_copy


def _rejects(folder) -> dict[str, str]:
    return {r["key"]: r["error"] for m in sorted(folder.glob("shard-*.json")) for r in json.loads(m.read_text())["rejects"]}


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.timeout(600)  # a Ray start, two jobs and a re-run on a shared 2-core machine
def test_curate_photos_on_ray_finds_duplicates_across_shards_and_resumes(tmp_path, capsys, ray_shut_down_after):
    photo = astronaut()
    photo_shards(tmp_path / "in", jpeg(photo), reencoded_copy(photo))
    (tmp_path / "in" / "coffee.jpg").write_bytes(jpeg(skimage.data.coffee()))
    args = ["curate", "photos", "--in", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--quiet",
            "--set", "samples_per_shard=1", "--set", "cpus=0.5", "--workers", "2"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "on the ray runner" in printed and "1 x duplicate" in printed and "1 x person" in printed
    assert "report.html" in printed
    [duplicate] = _rejects(tmp_path / "out" / "photos").values()
    assert duplicate.startswith("duplicate: near-duplicate of p0000000")
    assert inspect_dataset(tmp_path / "out" / "photos").ok
    assert main([*args[:-2], "--runner", "local"]) == 0  # same output, same config: everything is skipped
    assert re.search(r"in (\d+) shards \(\1 already complete, skipped\)", capsys.readouterr().out)


def test_the_cli_stops_before_work_on_a_missing_input_or_an_unknown_key(tmp_path, capsys):
    assert main(["curate", "photos", "--in", str(tmp_path / "none"), "--out", str(tmp_path / "o"), "--runner", "local"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["curate", "assets", "--in", str(tmp_path), "--out", str(tmp_path / "o"), "--runner", "local",
                 "--set", "checks.min_bone=3"]) == 2
    assert "did you mean checks.min_bones" in capsys.readouterr().err


@pytest.mark.slow
def test_the_demo_curates_its_characters_and_shipped_photos(tmp_path):
    from ray_jobs.demo import demo_curation
    from render.procedural import generate_characters

    generate_characters(tmp_path / "characters", 3, seed=0)
    characters, photos = demo_curation(tmp_path, tmp_path / "characters")
    assert characters.startswith("curated characters: 3 kept, 0 rejected (none)")
    assert photos.startswith("curated shipped photos: 2 kept, 3 rejected (") and "1 duplicate" in photos
    assert inspect_dataset(tmp_path / "curated").ok
