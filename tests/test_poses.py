import numpy as np

from render.poses import (
    A_POSE,
    JOINT_LIMITS,
    pose_collisions,
    posed_positions,
    sample_pose,
)
from render.skeleton import Proportions, rest_positions


def test_sampled_poses_respect_limits_and_do_not_self_intersect():
    rng = np.random.default_rng(0)
    for _ in range(300):
        pose = sample_pose(rng)
        for joint, angles in pose.items():
            for value, (lo, hi) in zip(angles, JOINT_LIMITS[joint]):
                assert lo - 1e-6 <= value <= hi + 1e-6, (joint, angles)
        assert pose_collisions(pose) == []


def test_elbows_and_knees_never_bend_backwards():
    assert JOINT_LIMITS["left_lower_leg"][0] == (0, 145) == JOINT_LIMITS["right_lower_leg"][0]
    rest = rest_positions(Proportions())
    for knee in (5, 90, 145):  # a bent knee moves the ankle backwards (-z)
        p = posed_positions({"left_lower_leg": [knee, 0, 0]}, rest)
        assert p["left_foot"][2] < 0
    for elbow in (-30, -140):  # a bent elbow moves the wrist forwards (+z), on both sides
        p = posed_positions({"left_lower_arm": [0, elbow, 0], "right_lower_arm": [0, -elbow, 0]}, rest)
        assert p["left_hand"][2] > 0 and p["right_hand"][2] > 0


def test_limbs_through_the_body_are_detected():
    assert pose_collisions({"left_upper_arm": [0, -90, 0], "left_lower_arm": [0, -140, 0]})
    assert pose_collisions(A_POSE) == []


def test_a_pose_lowers_both_arms_45_degrees():
    p = posed_positions(A_POSE, rest_positions(Proportions()))
    for side, sign in (("left", 1), ("right", -1)):
        arm = p[f"{side}_hand"] - p[f"{side}_upper_arm"]
        assert np.isclose(np.degrees(np.arctan2(-arm[1], sign * arm[0])), 45.0)
