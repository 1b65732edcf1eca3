"""The safe decoder inside real webdataset pipelines: the reader's records, the reader's refusals."""
import pickle
import tarfile

import numpy as np
import pytest
import webdataset as wds

from shards.reader import (ShardError, decode_safely, iter_dataset, safe_handler, safe_webdataset,
                           shard_error_handler)
from tests.helpers import png_bytes, raw_tar, write_shard


class _Touch:
    """Unpickling this creates a marker file: proof that something unpickled it."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def _evil(marker) -> bytes:
    return pickle.dumps(_Touch(marker))


def _png() -> bytes:
    return png_bytes(np.full((4, 4, 3), 9, np.uint8))


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    return type(a) is type(b) and a == b


PIPELINES = {
    "map(decode_safely)": lambda urls: wds.WebDataset(urls, shardshuffle=False).map(decode_safely),
    "decode(safe_handler)": lambda urls: wds.WebDataset(urls, shardshuffle=False).decode(safe_handler),
    "decode(safe_handler, pre=[])": lambda urls: wds.WebDataset(urls, shardshuffle=False).decode(
        safe_handler, pre=[], handler=shard_error_handler),
    "safe_webdataset": lambda urls: safe_webdataset(urls),
}


@pytest.mark.parametrize("pipeline", sorted(PIPELINES))
def test_webdataset_pipelines_give_the_readers_records(tmp_path, pipeline):
    write_shard(tmp_path, "shard-000000", keys=("a-1", "a-2"))
    write_shard(tmp_path, "shard-000001", keys=("b-1",))
    expected = list(iter_dataset(tmp_path))
    assert [r["__key__"] for r in expected] == ["a-1", "a-2", "b-1"]
    samples = list(PIPELINES[pipeline](str(tmp_path / "shard-{000000..000001}.tar")))
    assert [s["__key__"] for s in samples] == ["a-1", "a-2", "b-1"]
    for sample, record in zip(samples, expected):
        shard = "shard-000000.tar" if record["__key__"].startswith("a") else "shard-000001.tar"
        assert sample["__url__"] == str(tmp_path / shard)
        members = {k: v for k, v in sample.items() if not k.startswith("__")}
        assert sorted(members) == sorted(k for k in record if k != "__key__") == ["json", "src.png", "std.png"]
        for name, value in members.items():
            assert _same(value, record[name]), (pipeline, record["__key__"], name)
        assert members["src.png"].shape == (24, 16, 4)


@pytest.mark.parametrize("ext", ["pickle", "pyd", "pkl", "pth", "cls"])
@pytest.mark.parametrize("pipeline", sorted(PIPELINES))
def test_a_pickle_member_is_refused_and_never_unpickled(tmp_path, pipeline, ext):
    marker = tmp_path / "unpickled"
    shard = tmp_path / "shard-000000.tar"
    raw_tar(shard, [("a-1.json", b"{}"), (f"a-1.{ext}", _evil(marker))])
    with pytest.raises(Exception) as caught:
        list(PIPELINES[pipeline](str(shard)))
    error = caught.value
    if pipeline == "decode(safe_handler)":  # webdataset's Decoder wraps what a handler raises
        assert type(error).__name__ == "DecodingError"
        assert (error.url, error.key, error.k) == (str(shard), "a-1", ext)
        assert isinstance(error.__cause__, ShardError) and f"{ext!r} is unsafe" in str(error.__cause__)
    else:
        assert isinstance(error, ShardError)
        assert str(shard) in str(error) and f"a-1.{ext}" in str(error) and "unsafe" in str(error)
    assert not marker.exists()


def test_the_pickle_payload_is_real(tmp_path):
    """The control for the test above: webdataset's default decoder does run it."""
    marker = tmp_path / "unpickled"
    pickle.loads(_evil(marker))
    assert marker.exists()
    marker.unlink()
    shard = tmp_path / "shard-000000.tar"
    raw_tar(shard, [("a-1.json", b"{}"), ("a-1.pickle", _evil(marker))])
    list(wds.WebDataset(str(shard), shardshuffle=False).decode())
    assert marker.exists()


# (webdataset's own tar reading drops ".hidden.json", a name without a key, before any decoder sees it)
@pytest.mark.parametrize("pipeline, member", [
    (pipeline, member) for pipeline in ("map(decode_safely)", "safe_webdataset")
    for member in ("../x.json", "a/b.json", "sub\\k.json", ".hidden.json")
    if pipeline == "safe_webdataset" or member != ".hidden.json"])
def test_a_key_with_path_parts_is_refused(tmp_path, pipeline, member):
    shard = tmp_path / "shard-000000.tar"
    raw_tar(shard, [("a-1.json", b"{}"), (member, b"{}")])
    with pytest.raises(ShardError, match="path parts") as caught:
        list(PIPELINES[pipeline](str(shard)))
    assert str(shard) in str(caught.value) and repr(member) in str(caught.value)


def test_decode_safely_refuses_keys_and_passes_metadata_through():
    sample = {"__key__": "k", "__url__": "s3://b/shard-000007.tar", "__local_path__": "/x", "json": b'{"a": 1}'}
    assert decode_safely(sample) == {**sample, "json": {"a": 1}}
    for key in ("a/b", "a\\b", ".k"):
        with pytest.raises(ShardError, match=r"shard-000007\.tar.*path parts"):
            decode_safely({**sample, "__key__": key})
    with pytest.raises(ShardError, match=r"shard-000007\.tar.*'k\.__pickle'.*unsafe"):
        decode_safely({**sample, "__pickle": _evil("/nonexistent/never")})


@pytest.mark.parametrize("pipeline", sorted(PIPELINES))
def test_a_member_that_does_not_decode_is_named(tmp_path, pipeline):
    shard = tmp_path / "shard-000000.tar"
    raw_tar(shard, [("a-1.json", b"{}"), ("a-1.src.png", _png()[:40]), ("a-2.json", b"{}")])
    with pytest.raises(Exception) as caught:
        list(PIPELINES[pipeline](str(shard)))
    error = caught.value
    if pipeline == "decode(safe_handler)":
        assert type(error).__name__ == "DecodingError" and error.k == "src.png"
    else:
        assert isinstance(error, ShardError)
        assert str(shard) in str(error) and "a-1.src.png" in str(error) and "does not decode" in str(error)


def _cuts(shard) -> dict[str, int]:
    """Where to cut a shard: inside a member's data, inside a header, at a member boundary, before the end marker."""
    with tarfile.open(shard) as tar:
        members = tar.getmembers()
    second, last = members[1], members[-1]
    return {"mid-data": second.offset_data + second.size // 2, "mid-header": second.offset + 100,
            "boundary": second.offset, "no-end-marker": last.offset_data + -(-last.size // 512) * 512}


@pytest.mark.parametrize("where", ["mid-data", "mid-header", "boundary", "no-end-marker"])
def test_a_truncated_shard_is_named(tmp_path, where):
    write_shard(tmp_path)
    shard = tmp_path / "shard-000000.tar"
    data = shard.read_bytes()
    assert len(list(safe_webdataset(str(shard)))) == 2
    cut = _cuts(shard)[where]
    shard.write_bytes(data[:cut])
    with pytest.raises(ShardError, match=r"shard-000000\.tar: truncated"):
        list(safe_webdataset(str(shard)))
    if where == "mid-data":  # the one cut webdataset's own tar reading notices (past the first header)
        with pytest.raises(ShardError, match=r"shard-000000\.tar: truncated"):
            list(wds.WebDataset(str(shard), shardshuffle=False, handler=shard_error_handler).map(decode_safely))


def test_shard_error_handler_names_the_shard_of_a_raw_tar_error(tmp_path):
    shard = tmp_path / "shard-000000.tar"
    write_shard(tmp_path)
    shard.write_bytes(shard.read_bytes()[:100])  # inside the first header
    with pytest.raises(ShardError, match=r"shard-000000\.tar: truncated or corrupt"):
        list(wds.tarfile_to_samples(handler=shard_error_handler)([{"url": str(shard)}]))
    with pytest.raises(tarfile.ReadError):  # the same shard without it: webdataset's bare error
        list(wds.tarfile_to_samples()([{"url": str(shard)}]))


def test_safe_webdataset_is_a_fluid_pipeline(tmp_path):
    write_shard(tmp_path, "shard-000000", keys=("a-1", "a-2"))
    write_shard(tmp_path, "shard-000001", keys=("b-1",))
    urls = [str(tmp_path / "shard-000000.tar"), str(tmp_path / "shard-000001.tar")]
    raw = list(safe_webdataset(urls, decode=False).map(decode_safely))
    assert [r["__key__"] for r in raw] == ["a-1", "a-2", "b-1"]
    assert raw[0]["src.png"].shape == (24, 16, 4)
    keys = list(safe_webdataset(urls).to_tuple("__key__", "json"))
    assert [k for k, _ in keys] == ["a-1", "a-2", "b-1"] and keys[0][1]["split"] == "train"
    resampled = list(safe_webdataset(urls, resampled=True).slice(7))
    assert len(resampled) == 7 and {r["__key__"] for r in resampled} <= {"a-1", "a-2", "b-1"}


@pytest.mark.parametrize("pipeline", ["map(decode_safely)", "safe_webdataset"])
def test_the_compositing_docstring_usage_runs(tmp_path, pipeline):
    """train/compositing.py's example: the same composites as from the reader's records."""
    from render.compositing.backgrounds import ProceduralBackgrounds
    from train.compositing import OnTheFlyComposite

    write_shard(tmp_path)
    url = str(tmp_path / "shard-000000.tar")
    if pipeline == "safe_webdataset":
        dataset = safe_webdataset(url).map(OnTheFlyComposite(ProceduralBackgrounds(100), seed=0))
    else:
        dataset = (wds.WebDataset(url, shardshuffle=False, handler=shard_error_handler)
                   .map(decode_safely).map(OnTheFlyComposite(ProceduralBackgrounds(100), seed=0)))
    got = list(dataset)
    want = [OnTheFlyComposite(ProceduralBackgrounds(100), seed=0)(r) for r in iter_dataset(tmp_path)]
    assert [g["__key__"] for g in got] == [w["__key__"] for w in want] == ["a-1", "a-2"]
    for g, w in zip(got, want):
        assert np.array_equal(g["image"], w["image"]) and g["placement"] == w["placement"]
