"""Fixtures shared by the tests (plain helpers are in tests/helpers.py), and the markers' house rules:

- ``blender``: the test needs bpy (the blender extra); without bpy it is skipped, here, for all of them.
- ``ray``: the test starts a Ray cluster (embedded or ``ray start``).
- ``slow``: the test (with its share of its module's fixtures) takes more than about 2 s.
  ``pytest -m "not slow" tests`` is the quick run.
Every test has pyproject's default timeout; a larger ``@pytest.mark.timeout`` says why it needs it."""
import importlib.util
import itertools
import os

import pytest

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")


def pytest_collection_modifyitems(config, items):
    if importlib.util.find_spec("bpy") is None:
        skip = pytest.mark.skip(reason="bpy not installed (pip install 'pairforge[blender]')")
        for item in items:
            if item.get_closest_marker("blender"):
                item.add_marker(skip)


@pytest.fixture(scope="session")
def backend():
    from render.backends import make_backend
    b = make_backend("pyrender")
    yield b
    b.close()


@pytest.fixture(scope="session")
def character_dir(tmp_path_factory):
    from render.procedural import generate_characters
    out = tmp_path_factory.mktemp("characters")
    generate_characters(out, 4, seed=7)
    return out


@pytest.fixture(scope="session")
def tiny_qwen2vl(tmp_path_factory):
    """A tiny Qwen2-VL folder (save_pretrained: model, BPE tokenizer, processor), built in ~4 s."""
    from curate.caption.tiny import build_tiny_qwen2vl
    return build_tiny_qwen2vl(tmp_path_factory.mktemp("tiny-qwen2vl") / "model")


@pytest.fixture
def ray_shut_down_after():
    """For tests that run a Ray job in this process: the embedded Ray does not outlive them."""
    yield
    import ray
    ray.shutdown()


@pytest.fixture(scope="session")
def moto_endpoint():
    """A real S3 server (moto's server mode) on 127.0.0.1 for the session; its endpoint URL."""
    pytest.importorskip("moto")
    from tests.s3server import start_moto
    server, endpoint = start_moto()
    yield endpoint
    server.stop()


_BUCKETS = itertools.count()


@pytest.fixture
def s3(moto_endpoint, monkeypatch):
    """A fresh bucket on the server, this process's credentials and endpoint set; returns its URL."""
    pytest.importorskip("s3fs")
    import boto3

    from tests.s3server import CREDENTIALS
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("PAIRFORGE_STORAGE_BACKOFF_S", "0.01")
    bucket = f"test-{next(_BUCKETS)}"
    boto3.client("s3", endpoint_url=moto_endpoint).create_bucket(Bucket=bucket)
    return f"s3://{bucket}"
