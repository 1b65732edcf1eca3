import json

import pytest

from shards.inspect import inspect_dataset
from shards.keys import check_key, sample_key, sample_seed, split_of
from shards.reader import ShardError, iter_shard
from shards.schema import SYNTHETIC_PAIR
from shards.writer import ShardWriter, read_manifest, shard_is_complete
from tests.helpers import make_record, raw_tar, write_shard


def test_keys_and_seeds_are_deterministic_and_dot_free():
    assert sample_key(3, 12, 0) == "c0003-p0012-v0"
    assert sample_seed(1, "k") == sample_seed(1, "k") != sample_seed(2, "k")
    with pytest.raises(ValueError):
        check_key("a.b")
    splits = [split_of(f"char-{i}") for i in range(2000)]
    assert 0.17 < splits.count("test") / len(splits) < 0.23


def test_writer_is_atomic_and_writes_a_manifest(tmp_path):
    manifest = write_shard(tmp_path)
    assert (tmp_path / "shard-000000.tar").exists() and not list(tmp_path.glob("*.tmp"))
    assert manifest == read_manifest(tmp_path, "shard-000000")
    assert manifest["count"] == 2 and manifest["keys"] == ["a-1", "a-2"]
    assert manifest["status"] == {"ok": 2, "rejected": 1}
    assert manifest["rejects"][0]["error"] == "character: broken"
    assert manifest["schema"] == {"name": "synthetic_pair", "version": 1}
    assert shard_is_complete(tmp_path, "shard-000000", "cfg") and not shard_is_complete(tmp_path, "shard-000000", "x")
    records = list(iter_shard(tmp_path / "shard-000000.tar"))
    assert [r["__key__"] for r in records] == ["a-1", "a-2"]
    assert records[0]["src.png"].shape == (24, 16, 4)
    # same records, same bytes
    assert inspect_dataset(tmp_path).ok
    write_shard(tmp_path / "again")
    assert (tmp_path / "again/shard-000000.tar").read_bytes() == (tmp_path / "shard-000000.tar").read_bytes()
    assert inspect_dataset(tmp_path).ok  # another dataset (folder) may reuse keys
    write_shard(tmp_path, "shard-000001")
    assert any("more than one place" in p for p in inspect_dataset(tmp_path).problems)


def test_a_failure_mid_shard_leaves_nothing_visible(tmp_path):
    with pytest.raises(RuntimeError):
        with ShardWriter(tmp_path, "shard-000000", SYNTHETIC_PAIR, "cfg") as writer:
            writer.write(make_record("a-1"))
            raise RuntimeError("worker died")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("member, problem", [
    ("../x.json", "path parts"), ("a/b.json", "path parts"),
    ("k.pyd", "unsafe"), ("k.pickle", "unsafe"), ("k.pth", "unsafe")])
def test_reader_and_inspect_refuse_unsafe_members(tmp_path, member, problem):
    write_shard(tmp_path)
    shard = tmp_path / "shard-000000.tar"
    raw_tar(shard, [("a-1.json", b"{}"), (member, b"\x80\x04K\x01.")])
    with pytest.raises(ShardError, match=f"shard-000000.tar.*{problem}"):
        list(iter_shard(shard))
    report = inspect_dataset(tmp_path)
    assert not report.ok and any("shard-000000.tar" in p and problem in p for p in report.problems)


def test_truncated_shard_is_named(tmp_path):
    write_shard(tmp_path)
    shard = tmp_path / "shard-000000.tar"
    data = shard.read_bytes()
    for cut in (len(data) // 2, 1024 + 300, 512 * 3):
        shard.write_bytes(data[:cut])
        with pytest.raises(ShardError, match="shard-000000.tar.*(truncated|corrupt)"):
            list(iter_shard(shard))
        report = inspect_dataset(tmp_path)
        assert not report.ok and any("shard-000000.tar" in p for p in report.problems)


def test_inspect_catches_schema_and_manifest_problems(tmp_path):
    write_shard(tmp_path)
    bad = make_record("a-3")
    meta = json.loads(bad["json"])
    del meta["split"]
    bad["json"] = json.dumps(meta).encode()
    with ShardWriter(tmp_path, "shard-000001", SYNTHETIC_PAIR, "cfg") as writer:
        writer.write(bad)
    report = inspect_dataset(tmp_path)
    assert any("a-3" in p and "split" in p for p in report.problems)
    (tmp_path / "shard-000001.json").unlink()
    assert any("no readable manifest" in p for p in inspect_dataset(tmp_path).problems)


def test_a_key_that_hung_is_retried_when_the_deadline_changed(tmp_path):
    """The watchdog's record of keys that hung: under the same deadline a lone hang is a reject
    without another try; a job resumed with another --sample-timeout tries them again."""
    import json

    from ray_jobs.shardwork import Watchdog
    (tmp_path / "_watchdog").mkdir()
    (tmp_path / "_watchdog" / "shard-000000.hung").write_text(
        json.dumps({"suspects": ["b"], "hung": ["a"], "seconds": 5.0}))
    same = Watchdog.of_process(tmp_path, 5.0).record("shard-000000")
    assert same["hung"] == ["a"] and same["suspects"] == ["b"]
    longer = Watchdog.of_process(tmp_path, 60.0).record("shard-000000")
    assert longer["hung"] == [] and sorted(longer["suspects"]) == ["a", "b"]
    assert Watchdog.of_process(tmp_path, 5.0).record("shard-000001") == {"suspects": [], "hung": [], "seconds": 5.0}
