"""No bad record is written (issue 13): rigs as new users bring them (smooth head weights, no
material or UVs, 0.5x-2x, Mixamo, VRM and CMU bone names, T- and A-pose rests) standardize with the
face in place; empty renders, misplaced face boxes, keypoints off the character and limbs passing
through each other are rejects with the reason."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from render.backends import make_backend
from render.characters import CharacterError, load_character
from render.gltf import Glb, GlbBuilder
from render.poses import A_POSE
from render.procedural import sample_params
from render.procedural.writer import write_character_glb
from render.qa import empty_render, interpenetration, keypoints_off_character, limb_radii, misplaced_face
from render.skeleton import JOINT_INDEX
from render.spec import StandardView, standard_spec
from tests.test_face_landmarks import write_realistic_rig

VIEW, RESOLUTION = StandardView(), (512, 768)


def as_users_bring_it(path, head_weight: float | None = None, plain: bool = False, head_bone: bool = True) -> None:
    """Rewrite a rig: ``head_weight`` caps every vertex's weight on the head (the rest goes to the
    neck, as automatic weights spread it); ``plain`` drops materials, textures and UVs;
    ``head_bone`` False moves the head's weights to the neck (a rig with no head)."""
    glb = Glb.load(path)
    builder = GlbBuilder.from_glb(glb)
    gltf = builder.gltf
    for prim in gltf["meshes"][0]["primitives"]:
        joints = glb.read(prim["attributes"]["JOINTS_0"]).astype(np.int64)
        weights = glb.read(prim["attributes"]["WEIGHTS_0"]).astype(np.float32)
        on_head = joints == JOINT_INDEX["head"]
        if head_weight is not None or not head_bone:
            cap = head_weight if head_bone else 0.0
            head = (weights * on_head).sum(1)
            moved = np.maximum(head - cap, 0)
            weights = np.where(on_head, weights * np.where(head > 0, np.minimum(head, cap) / np.maximum(head, 1e-9),
                                                             1)[:, None], weights)
            slot = np.argmin(np.where(on_head, 2.0, weights), axis=1)  # a free (or the lightest) slot takes the rest
            rows = np.flatnonzero(moved > 0)
            joints[rows, slot[rows]], weights[rows, slot[rows]] = JOINT_INDEX["neck"], moved[rows]
            prim["attributes"]["JOINTS_0"] = builder.accessor(joints.astype(np.uint8), "VEC4")
            prim["attributes"]["WEIGHTS_0"] = builder.accessor(weights, "VEC4")
        if plain:
            prim.pop("material", None)
            prim["attributes"].pop("TEXCOORD_0", None)
    if plain:
        for key in ("materials", "textures", "images", "samplers"):
            gltf.pop(key, None)
    path.write_bytes(builder.to_bytes())


def head_pixels(result) -> tuple[np.ndarray, float]:
    ys, xs = np.nonzero(result["head_mask"])
    return np.array([(xs.min() + xs.max() + 1) / 2, (ys.min() + ys.max() + 1) / 2]), float(ys.max() + 1 - ys.min())


@pytest.mark.slow
def test_rigs_as_users_bring_them_standardize_with_the_face_in_place(tmp_path):
    """The issue's two reports first: a Mixamo rig at 0.6x whose head weights are smooth (no
    vertex >= 0.99 on the head) was rejected; a VRM-named rig with no material or UVs at 1.8x.
    Then CMU names at 0.5x and 2x, and A-pose rests."""
    target = np.array([VIEW.face_center[0] * RESOLUTION[0], VIEW.face_center[1] * RESOLUTION[1]])
    backend = make_backend("pyrender")
    rigs = []
    for scheme, scale, cap, plain in (("mixamo", 0.6, 0.8, False), ("vroid", 1.8, None, True),
                                      ("cmu", 0.5, 0.7, True), ("cmu", 2.0, 0.9, False)):
        path = tmp_path / f"{scheme}{scale}.glb"
        write_realistic_rig(path, scale=scale, scheme=scheme, smooth=True)
        as_users_bring_it(path, head_weight=cap, plain=plain)
        rigs.append(path)
    for rest, scale in (("A", 0.5), ("A", 2.0)):
        params = dataclasses.replace(sample_params(4), hair_style="bald")
        params = dataclasses.replace(params, proportions=dataclasses.replace(params.proportions,
                                                                             height=1.7 * scale))
        rigs.append(write_character_glb(params, tmp_path / f"{rest}{scale}.glb", scheme="mixamo", rest_pose=rest))
    try:
        for path in rigs:
            character = backend.open_character(path)
            assert not any(p.head_faces.all() for p in character.primitives)
            result = backend.render(standard_spec(VIEW, character.id, character.path, RESOLUTION),
                                    with_head_mask=True)
            centre, height = head_pixels(result)
            assert np.abs(centre - target).max() <= 2.0, (path.name, centre)
            assert abs(height / (VIEW.head_height * RESOLUTION[1]) - 1) <= 0.03, (path.name, height)
            assert empty_render(result, "standardized") is None and misplaced_face(result, VIEW) is None
    finally:
        backend.close()


def test_only_a_rig_with_no_head_is_refused(tmp_path):
    path = tmp_path / "headless.glb"
    write_realistic_rig(path, scheme="mixamo", smooth=True)
    as_users_bring_it(path, head_bone=False)
    with pytest.raises(CharacterError, match="head"):
        load_character(path)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    backend = make_backend("fake")
    character = backend.open_character(write_character_glb(sample_params(2), tmp_path_factory.mktemp("r") / "c.glb"))
    spec = standard_spec(VIEW, character.id, character.path, (128, 192))
    return character, backend.render(spec)


def test_record_checks_pass_a_good_render_and_reject_bad_ones_with_the_reason(rendered):
    _, result = rendered
    assert empty_render(result, "source") is None and misplaced_face(result, VIEW) is None
    assert keypoints_off_character(result) is None
    empty = {**result, "mask": np.zeros_like(result["mask"])}
    reason, fields = empty_render(empty, "source")
    assert reason.startswith("empty render:") and fields == {"coverage": 0.0}
    assert keypoints_off_character(empty)[0].startswith("keypoints off character:")
    # the case: a face box twice the head it should frame, at its place
    x0, y0, x1, y1 = result["face_box"]
    hx0, hy0, hx1, hy1 = result["head_box"]
    half = (hy1 - hy0) / 4
    shrunk = {**result, "head_box": [hx0, (y0 + y1) / 2 - half, hx1, (y0 + y1) / 2 + half]}
    assert misplaced_face(shrunk, VIEW)[0].startswith("face box:")
    moved = {**result, "face_box": [x0 + 5, y0, x1 + 5, y1]}
    assert misplaced_face(moved, VIEW)[0].startswith("face box: centre off its place")


def test_limbs_through_each_other_are_a_reject(rendered):
    character, _ = rendered
    radii = limb_radii(character)
    assert set(radii) == {f"{s}_{p}" for s in ("left", "right") for p in ("upper_arm", "lower_arm", "upper_leg",
                                                                           "lower_leg")}

    def points(pose):
        world = character.node_globals(pose)
        return {joint: world[node][:3, 3] for joint, node in character.joint_nodes.items()}

    assert interpenetration(points(A_POSE), radii) is None
    crossed = {**A_POSE, "left_upper_leg": [0, 0, -25], "right_upper_leg": [0, 0, 25]}  # thighs through each other
    reason, fields = interpenetration(points(crossed), radii)
    assert reason.startswith("interpenetration: ") and set(fields["limbs"]) == {"left_upper_leg", "right_upper_leg"}
