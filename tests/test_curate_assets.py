"""pairforge curate assets: procedural characters with one defect injected each; every defect
caught with its reason, clean characters kept, a re-exported scaled copy found as a duplicate."""
import json

import pytest

from curate.assets import AssetChecks, AssetJobConfig, canonical_render, check_mesh, shape_descriptor
from ray_jobs.config import ConfigError
from ray_jobs.curation import run_curate_assets
from ray_jobs.jobs import RunOptions
from render.characters import load_character
from shards.stage import reject_reason
from tests.tools.curation_corpus import character_corpus

LOCAL = RunOptions(runner="local", progress=False)


@pytest.fixture(scope="module")
def asset_job(tmp_path_factory):
    root = tmp_path_factory.mktemp("curate-assets")
    expected = character_corpus(root / "in")
    summary = run_curate_assets(AssetJobConfig(samples_per_shard=4), str(root / "in"), str(root / "out"), LOCAL)
    return root, expected, summary


@pytest.mark.slow
def test_every_injected_defect_is_caught_and_clean_characters_kept(asset_job):
    root, expected, summary = asset_job
    got = {}
    for folder in ("checked", "assets"):
        for manifest in sorted((root / "out" / folder).glob("shard-*.json")):
            for reject in json.loads(manifest.read_text())["rejects"]:
                got[reject["source"].rsplit("/", 1)[-1]] = reject_reason(reject["error"])
    kept = (root / "out" / "kept.txt").read_text().split()
    got.update({path.rsplit("/", 1)[-1]: None for path in kept})
    assert got == expected
    assert summary.done == 2
    assert sorted(p.name for p in (root / "out" / "kept").iterdir()) == ["a-clean.glb", "b-clean-vroid.glb"]
    report = (root / "out" / "report.html").read_text()
    assert "texture: 2" in report and "duplicate: 1" in report


@pytest.mark.slow
def test_the_duplicate_names_the_kept_original(asset_job):
    root, _, _ = asset_job
    rejects = [r for m in sorted((root / "out" / "assets").glob("shard-*.json"))
               for r in json.loads(m.read_text())["rejects"]]
    assert [r["error"] for r in rejects] == ["duplicate: of a000000 (a-clean.glb)"]


@pytest.mark.slow
def test_signature_is_blind_to_scale_and_names_but_not_to_the_body(asset_job):
    root, _, _ = asset_job
    original, copy, other = (load_character(root / "in" / n)
                             for n in ("a-clean.glb", "k-a-as-mixamo-scaled.glb", "b-clean-vroid.glb"))
    assert abs(shape_descriptor(original) - shape_descriptor(copy)).sum() < 0.01
    assert abs(shape_descriptor(original) - shape_descriptor(other)).sum() > AssetChecks().max_shape_distance
    assert (canonical_render(original) == canonical_render(copy)).mean() > 0.99
    assert check_mesh(copy, AssetChecks(max_height_m=1.0)).startswith("mesh: height")


def test_a_missing_folder_or_a_broken_config_stops_before_any_work(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        run_curate_assets(AssetJobConfig(), str(tmp_path / "nowhere"), str(tmp_path / "out"), LOCAL)
    with pytest.raises(ConfigError, match="min_height_m"):
        run_curate_assets(AssetJobConfig(checks=AssetChecks(min_height_m=9.0)), str(tmp_path), str(tmp_path / "o"), LOCAL)
