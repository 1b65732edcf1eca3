import os

import pytest

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")


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
