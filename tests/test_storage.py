"""shards/storage.py against a real S3 server (moto's server mode on 127.0.0.1) and local disk:
the same calls on both, create-only writes, streamed reads, racing shard writers, transient
faults injected at the server retried and counted, permanent errors named."""
import pytest

from shards import storage
from shards.reader import iter_shard
from shards.writer import ShardConflict, ShardWriter, read_manifest
from tests.helpers import make_record, write_shard
from tests.s3server import FaultProxy, Faults

pytest.importorskip("s3fs")


@pytest.fixture(params=["local", "s3"])
def place(request, tmp_path):
    return str(tmp_path / "data") if request.param == "local" else request.getfixturevalue("s3") + "/data"


def test_the_same_calls_work_on_disk_and_on_s3(place):
    storage.write_bytes(storage.join(place, "a", "x.json"), b"{}")
    storage.write_bytes(storage.join(place, "a", "y.tar"), b"tar")
    assert storage.read_bytes(storage.join(place, "a", "y.tar")) == b"tar"
    assert storage.size(storage.join(place, "a", "x.json")) == 2 and storage.size(storage.join(place, "nope")) is None
    assert [storage.name(p) for p in storage.glob(storage.join(place, "a"), "*.tar")] == ["y.tar"]
    assert [storage.name(p) for p in storage.find(place)] == ["x.json", "y.tar"]
    assert storage.is_dir(storage.join(place, "a")) and not storage.is_dir(storage.join(place, "b"))
    with pytest.raises(FileExistsError):
        storage.write_bytes(storage.join(place, "a", "x.json"), b"other", exclusive=True)
    assert storage.read_bytes(storage.join(place, "a", "x.json")) == b"{}"
    storage.remove_tree(place)
    assert not storage.exists(storage.join(place, "a", "x.json"))
    with pytest.raises(FileNotFoundError, match="x.json"):  # a missing object names its URL
        storage.read_bytes(storage.join(place, "a", "x.json"))


def test_a_shard_streams_from_s3_in_ranged_blocks(s3, tmp_path, monkeypatch):
    write_shard(tmp_path, keys=[f"a-{i}" for i in range(6)])
    local = tmp_path / "shard-000000.tar"
    url = f"{s3}/shard-000000.tar"
    storage.put_file(local, url)
    monkeypatch.setattr(storage, "BLOCK_BYTES", 1000)  # a ~20 kB shard in many GETs: streamed, not fetched whole
    reads = []
    monkeypatch.setattr(storage._RangedReader, "readinto", _counting(storage._RangedReader.readinto, reads))
    assert [r["__key__"] for r in iter_shard(url)] == [r["__key__"] for r in iter_shard(local)]
    assert len(reads) > 10


def _counting(method, calls):
    def wrapped(self, target):
        calls.append(len(target))
        return method(self, target)
    return wrapped


def test_racing_writers_of_one_shard_cannot_both_win(s3):
    def write(records):
        with ShardWriter(s3, "shard-000000", _schema(), "cfg") as writer:
            for record in records:
                writer.write(record)
        return writer.manifest

    first = write([make_record("a-1"), make_record("a-2")])
    assert write([make_record("a-1"), make_record("a-2")]) == first  # the same bytes: the shard is kept as is
    with pytest.raises(ShardConflict, match="another writer finished shard shard-000000 first"):
        write([make_record("a-1")])
    assert read_manifest(s3, "shard-000000") == first
    assert storage.sha256(f"{s3}/shard-000000.tar") == first["sha256"]
    assert [storage.name(p) for p in storage.find(s3)] == ["shard-000000.json", "shard-000000.tar"]  # no temporaries


def _schema():
    from shards.schema import SYNTHETIC_PAIR
    return SYNTHETIC_PAIR


@pytest.fixture
def faulty(s3, moto_endpoint, monkeypatch):
    """The bucket behind a proxy that fails every 3rd PUT and holds every 4th GET past the timeout."""
    faults = Faults(fail_put_every=3, stall_get_every=4, stall_s=1.5)
    proxy = FaultProxy(moto_endpoint, faults)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
    monkeypatch.setenv("PAIRFORGE_STORAGE_TIMEOUT_S", "0.5")
    yield s3, faults
    proxy.close()


@pytest.mark.slow  # ~4 s: the held GETs wait out their timeouts
def test_transient_faults_are_retried_with_backoff_and_counted(faulty, tmp_path):
    bucket, faults = faulty
    before = storage.retry_counts()
    write_shard(tmp_path, keys=[f"a-{i}" for i in range(4)])
    local = tmp_path / "shard-000000.tar"
    for i in range(4):
        storage.put_file(local, f"{bucket}/s{i}.tar")
    for i in range(4):
        assert [r["__key__"] for r in iter_shard(f"{bucket}/s{i}.tar")] == ["a-0", "a-1", "a-2", "a-3"]
    after = storage.retry_counts()
    assert faults.injected["put 503"] >= 1 and faults.injected["get stall"] >= 1
    assert after.get("put", 0) - before.get("put", 0) >= faults.injected["put 503"]
    assert sum(after.values()) - sum(before.values()) >= sum(faults.injected.values())


def test_permanent_errors_name_the_url_and_what_to_check(s3, moto_endpoint, monkeypatch):
    before = storage.retry_counts()
    with pytest.raises(storage.StorageError, match=r"s3://no-such-bucket/out: the bucket 'no-such-bucket' does not "
                                                   r"exist at http://127\.0\.0\.1.*storage\.endpoint_url"):
        storage.check_access("s3://no-such-bucket/out", write=True)
    proxy = FaultProxy(moto_endpoint, Faults(deny_bucket=s3.removeprefix("s3://")))
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
    try:
        with pytest.raises(storage.StorageError, match=f"{s3}/out: access denied.*credentials"):
            storage.check_access(f"{s3}/out", write=True)
    finally:
        proxy.close()
    assert storage.retry_counts() == before  # nothing permanent is retried


def test_storage_settings_come_from_set_and_reach_child_processes(monkeypatch):
    from ray_jobs.config import ConfigError, apply_storage_overrides

    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("PAIRFORGE_STORAGE_ATTEMPTS", raising=False)
    left = apply_storage_overrides(["storage.endpoint_url=http://127.0.0.1:9", "storage.attempts=3", "seed=1"])
    assert left == ["seed=1"]
    assert storage.settings().endpoint_url == "http://127.0.0.1:9" and storage.settings().attempts == 3
    import os
    assert os.environ["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9"  # what Ray workers and subprocesses inherit
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    with pytest.raises(ConfigError, match="storage.endpoint"):
        apply_storage_overrides(["storage.endpoint=x"])
    with pytest.raises(ConfigError, match="attempts must be >= 1"):
        apply_storage_overrides(["storage.attempts=0"])
