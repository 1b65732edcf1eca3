"""Fixtures shared by the tests (plain helpers are in tests/helpers.py), and the markers' house rules:

- ``blender``: the test needs bpy (the blender extra); without bpy it is skipped, here, for all of them.
- ``ray``: the test starts a Ray cluster (embedded or ``ray start``).
- ``slow``: the test (with its share of its module's fixtures) takes more than about 2 s.
  ``pytest -m "not slow" tests`` is the quick run.
Every test has pyproject's default timeout; a larger ``@pytest.mark.timeout`` says why it needs it."""
import importlib.util
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


@pytest.fixture
def ray_shut_down_after():
    """For tests that run a Ray job in this process: the embedded Ray does not outlive them."""
    yield
    import ray
    ray.shutdown()
