"""Keypoint visibility as a pose estimator has it (issue 13): a keypoint is visible when it is in
frame and only its own body parts cover it; another part in front of it (an arm behind the back,
seen from the front) hides it; a keypoint outside the frame is never visible."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from render.backends import make_backend
from render.characters import load_character
from render.poses import A_POSE
from render.procedural import sample_params
from render.procedural.writer import write_character_glb
from render.skeleton import BODY_KEYPOINTS
from render.spec import StandardView, standard_spec
from shards.schema import OPENPOSE18

ELBOW, WRIST = OPENPOSE18.index("right_elbow"), OPENPOSE18.index("right_wrist")
# The right arm folded behind the back, and the same arm mirrored front-to-back: across the chest.
BEHIND_THE_BACK = {**A_POSE, "right_upper_arm": [-75, -120, 0], "right_lower_arm": [0, -90, 0]}
ACROSS_THE_CHEST = {**A_POSE, "right_upper_arm": [75, 120, 0], "right_lower_arm": [0, 90, 0]}


@pytest.fixture(scope="module")
def character_path(tmp_path_factory):
    return write_character_glb(dataclasses.replace(sample_params(1), hair_style="bald"),
                               tmp_path_factory.mktemp("visibility") / "c.glb")


@pytest.mark.parametrize("backend_name", ["fake", "pyrender"])
def test_an_arm_behind_the_back_is_hidden_and_in_front_of_the_chest_visible(character_path, backend_name):
    backend = make_backend(backend_name)
    try:
        character = backend.open_character(character_path)
        front = standard_spec(StandardView(), character.id, character.path, (256, 384))
        height = character.height()
        for pose, behind in ((BEHIND_THE_BACK, True), (ACROSS_THE_CHEST, False)):
            globals_ = character.node_globals(pose)
            elbow, wrist = (globals_[character.joint_nodes[j]][:3, 3] for j in ("right_lower_arm", "right_hand"))
            # the pose does what it says: the forearm lies behind (or in front of) the torso, near its middle
            assert (wrist[2] < -0.07 * height and elbow[2] < -0.05 * height) == behind
            assert abs(wrist[0]) < 0.06 * height and abs(elbow[0]) < 0.08 * height
            result = backend.render(dataclasses.replace(front, pose=pose))
            assert result["in_frame"].all()
            assert result["occluded"][[ELBOW, WRIST]].tolist() == [behind, behind]
            assert result["keypoints"][[ELBOW, WRIST], 2].tolist() == [float(not behind)] * 2
            others = [i for i in BODY_KEYPOINTS if i not in (ELBOW, WRIST)]
            assert (result["keypoints"][others, 2] == 1).all()  # the rest of the body stays visible
    finally:
        backend.close()


def test_a_keypoint_outside_the_frame_is_never_visible(character_path):
    """The face placed low in a small frame: the legs leave it at the bottom."""
    backend = make_backend("fake")
    character = backend.open_character(character_path)
    spec = standard_spec(StandardView(face_center=(0.5, 0.45), head_height=0.2), character.id, character.path,
                         (128, 192))
    result = backend.render(spec)
    kp = result["keypoints"]
    outside = (kp[:, 0] < 0) | (kp[:, 0] >= 128) | (kp[:, 1] < 0) | (kp[:, 1] >= 192)
    assert outside.sum() >= 4  # knees and ankles at least
    assert not result["in_frame"][outside].any() and (kp[outside, 2] == 0).all()
    assert not result["occluded"][outside].any()  # out of frame is not "covered by another part"
    assert (kp[~outside, 2] == 1).all()


def test_the_standardized_render_shows_every_body_joint_and_the_face(tmp_path):
    """Front camera, A-pose: every body joint (and nose, eyes, ears) visible, for characters of
    many sizes, shapes, hair styles and clothes."""
    backend = make_backend("fake")
    for seed in range(6):
        character = load_character(write_character_glb(sample_params(seed), tmp_path / f"c{seed}.glb"))
        backend.load(character)
        result = backend.render(standard_spec(StandardView(), character.id, character.path, (256, 384)))
        hidden = [OPENPOSE18[i] for i in np.flatnonzero(result["keypoints"][:, 2] == 0)]
        assert not hidden, (seed, hidden)
