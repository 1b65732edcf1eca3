"""pairforge curate photos: a corpus of altered real photographs (scikit-image's astronaut,
coffee) with one planted defect each; every defect caught with its reason, no clean photo
rejected by a check, duplicates found across shards, bad input a reject or a clear error."""
import json

import numpy as np
import pytest

from curate.photos import PhotoChecks, PhotoRejected, check_exposure, check_pixels, check_sharpness, check_size, decode
from curate.stages import PhotoJobConfig
from ray_jobs.config import ConfigError
from ray_jobs.curation import run_curate_photos
from ray_jobs.jobs import RunOptions
from shards.reader import iter_dataset
from shards.schema import PHOTO
from shards.stage import reject_reason
from tests.tools.curation_corpus import astronaut, jpeg, photo_corpus, photo_shards, reencoded_copy

LOCAL = RunOptions(runner="local", progress=False)


def manifests(folder):
    return [json.loads(p.read_text()) for p in sorted(folder.glob("shard-*.json"))]


def verdicts(folder) -> dict[str, str]:
    """source file name -> reject reason category, or None for kept, over a job's folder."""
    out = {}
    for record in iter_dataset(folder):
        out[record["json"]["source"].rsplit("/", 1)[-1]] = None
    for manifest in manifests(folder):
        for reject in manifest["rejects"]:
            out[reject["source"].rsplit("/", 1)[-1]] = reject_reason(reject["error"])
    return out


@pytest.fixture(scope="module")
def photo_job(tmp_path_factory):
    root = tmp_path_factory.mktemp("curate-photos")
    expected = photo_corpus(root / "in")
    summary = run_curate_photos(PhotoJobConfig(samples_per_shard=5), str(root / "in"), str(root / "out"), LOCAL)
    return root, expected, summary


@pytest.mark.slow
def test_every_planted_defect_is_caught_with_its_reason(photo_job):
    root, expected, _ = photo_job
    assert verdicts(root / "out" / "checked") == expected
    # The conversions of the clean photo (EXIF-rotated, CMYK, 16-bit, palette) pass every check;
    # they are the same picture, so the final set keeps one and names it in the others.
    final = verdicts(root / "out" / "photos")
    clean = [name for name, reason in expected.items() if reason is None]
    assert [name for name in clean if final[name] is None] == ["clean.jpg"]
    assert all(final[name] == "duplicate" for name in clean if name != "clean.jpg")


@pytest.mark.slow
def test_kept_photos_are_valid_photo_records_with_person_and_face(photo_job):
    root, _, summary = photo_job
    records = list(iter_dataset(root / "out" / "photos"))
    assert summary.done == len(records) == 1
    record = records[0]
    assert PHOTO.validate(record) == []
    meta = record["json"]
    keypoints = np.array(meta["keypoints"])
    assert (keypoints[:, 2] > 0).sum() >= 8  # nose, eyes, shoulders ... of the astronaut
    x0, y0, x1, y1 = meta["face_box"]
    nose = keypoints[0]
    assert x0 < nose[0] < x1 and y0 < nose[1] < y1
    mask = record["mask.png"] > 127
    assert 0.2 < mask.mean() < 0.7 and mask[int(nose[1]), int(nose[0])]
    assert {"sharpness", "brightness", "clipped", "people", "person_fraction", "phash"} <= set(meta["scores"])
    html = (root / "out" / "report.html").read_text()
    assert "duplicate: 4" in html and "blur: 1" in html and 'src="report/' in html
    assert len(list((root / "out" / "report").glob("*.png"))) >= 8


@pytest.mark.slow
def test_a_reencoded_resized_copy_in_another_shard_is_a_duplicate(tmp_path):
    photo = astronaut()
    photo_shards(tmp_path / "in", jpeg(photo), reencoded_copy(photo))
    run_curate_photos(PhotoJobConfig(samples_per_shard=1), str(tmp_path / "in"), str(tmp_path / "out"), LOCAL)
    checked = manifests(tmp_path / "out" / "checked")
    assert [m["count"] for m in checked] == [1, 1]  # one per shard: both pass the checks
    final = manifests(tmp_path / "out" / "photos")
    assert final[0]["count"] == 1 and final[1]["count"] == 0
    [reject] = final[1]["rejects"]
    assert reject["error"].startswith("duplicate: near-duplicate of p0000000") and reject["source"].endswith("b.tar#reencoded")


@pytest.mark.slow
def test_bad_entries_of_a_list_are_rejects_and_the_job_goes_on(tmp_path, monkeypatch):
    monkeypatch.setenv("PAIRFORGE_STORAGE_ATTEMPTS", "1")  # the unreachable URL: no backoff between retries
    (tmp_path / "good.jpg").write_bytes(jpeg(astronaut()))
    (tmp_path / "empty.jpg").write_bytes(b"")
    listing = tmp_path / "list.csv"
    listing.write_text("path\ngood.jpg\nmissing.jpg\nempty.jpg\nhttp://127.0.0.1:9/nothing.jpg\n")
    summary = run_curate_photos(PhotoJobConfig(), str(listing), str(tmp_path / "out"), LOCAL)
    assert summary.done == 1
    errors = {r["source"].rsplit("/", 1)[-1]: r["error"] for m in manifests(tmp_path / "out" / "checked")
              for r in m["rejects"]}
    assert errors["empty.jpg"] == "decode: empty file"
    assert errors["missing.jpg"].startswith("input: cannot read") and "FileNotFoundError" in errors["missing.jpg"]
    assert errors["nothing.jpg"].startswith("input: cannot read http://127.0.0.1:9/nothing.jpg")


def test_a_missing_source_or_an_unreadable_list_stops_before_any_work(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run_curate_photos(PhotoJobConfig(), str(tmp_path / "nowhere"), str(tmp_path / "out"), LOCAL)
    (tmp_path / "list.jsonl").write_text('{"path": "a.jpg"}\nnot json\n')
    with pytest.raises(ConfigError, match="unreadable source list"):
        run_curate_photos(PhotoJobConfig(), str(tmp_path / "list.jsonl"), str(tmp_path / "out"), LOCAL)
    with pytest.raises(ConfigError, match="checks.detector"):
        run_curate_photos(PhotoJobConfig(checks=PhotoChecks(detector="yolo")), str(tmp_path), str(tmp_path / "o"), LOCAL)
    assert not (tmp_path / "out" / "checked").exists()


def test_checks_are_pure_functions_of_their_measurements():
    c = PhotoChecks()
    assert check_pixels(7000, 7000, c) is None
    assert check_pixels(10_000, 10_000, c).startswith("decode: 10000x10000 is over checks.max_pixels")
    with pytest.raises(PhotoRejected, match="over checks.max_pixels"):  # refused from the header, before decoding
        decode(jpeg(astronaut()), PhotoChecks(max_pixels=100_000))
    assert check_size(1024, 1024, c) is None
    assert check_size(1024, 300, c).startswith("size:")
    assert check_size(3000, 1000, c).startswith("aspect:")
    assert check_sharpness(c.min_sharpness - 1, c).startswith("blur:")
    assert check_exposure(0.5, 0.1, c) is None
    assert check_exposure(0.95, 0.1, c).startswith("exposure: too bright")
    assert check_exposure(0.5, 0.8, c).startswith("exposure:")


@pytest.mark.parametrize("name", ["mediapipe", "opencv"])
def test_both_detectors_find_the_one_person_and_face_and_none_in_a_still_life(name):
    import skimage.data

    from curate.people import make_detector
    detector = make_detector(name)
    try:
        person, still_life = detector.detect(astronaut()), detector.detect(skimage.data.coffee())
    finally:
        detector.close()
    assert person.people == 1 and person.person_area > 0.1 * 512 * 512
    x0, y0, x1, y1 = person.face_box
    assert 150 < (x0 + x1) / 2 < 300 and 50 < (y0 + y1) / 2 < 200  # the astronaut's face
    assert (person.keypoints is not None) == (name == "mediapipe")
    assert still_life.people == 0 and still_life.face_box is None
