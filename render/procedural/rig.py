"""The rig at rest: the joints' world matrices in the T- or A-pose, with the A-pose baked into the
mesh and random bone rolls, so generated rigs differ from the canonical one as real rigs do."""
from __future__ import annotations

import numpy as np

from render.geometry import rotation_about, transform
from render.procedural.mesh import vertex_normals
from render.skeleton import JOINTS, PRIMARY_CHILD


def rest_rig(arrays: dict, rest_pose: str, roll_degrees: float, seed: int) -> dict[str, np.ndarray]:
    """World matrices of the joints at rest. "T" keeps the built T-pose; "A" bakes the A-pose into
    the mesh, normals and shape keys (as A-pose rigs ship). ``roll_degrees`` turns each joint's
    frame about its bone by a random angle up to that, as real rigs' bone rolls do: the frames
    change, the mesh does not."""
    from render.poses import A_POSE, joint_rotations, posed_positions
    rest = arrays["rest"]
    pose = A_POSE if rest_pose == "A" else {}
    if rest_pose not in ("A", "T"):
        raise ValueError(f"rest pose {rest_pose!r}: use 'T' or 'A'")
    rotations, positions = joint_rotations(pose), posed_positions(pose, rest)
    globals_ = {j: transform(rotations[j], positions[j]) for j in JOINTS}
    if pose:
        skin = np.stack([globals_[j] @ transform(translation=-rest[j]) for j in JOINTS])
        blended = np.einsum("nk,nkij->nij", arrays["weights"], skin[arrays["joints"]])
        rotate = lambda v: np.einsum("nij,nj->ni", blended[:, :3, :3], v).astype(np.float32)  # noqa: E731
        arrays["positions"] = (rotate(arrays["positions"]) + blended[:, :3, 3]).astype(np.float32)
        arrays["normals"] = vertex_normals(arrays["positions"], arrays["faces"].astype(np.int64))
        arrays["morphs"] = {k: rotate(v) for k, v in arrays["morphs"].items()}
        arrays["landmarks"] = {k: positions[k] for k in arrays["landmarks"]}
    rng = np.random.default_rng([seed, 0x2011])
    for joint, child in PRIMARY_CHILD.items():
        if roll_degrees:
            axis = positions[child] - positions[joint]
            roll = rotation_about(axis, float(rng.uniform(-roll_degrees, roll_degrees)))
            globals_[joint][:3, :3] = roll @ globals_[joint][:3, :3]
    return globals_
