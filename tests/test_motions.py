import json

import numpy as np
import pytest

from ray_jobs.cli import main
from render.geometry import rotation_xyz
from render.motions import (
    CLIPS,
    Motion,
    MotionError,
    builtin_motion,
    load_motions,
    read_bvh,
    read_pose_table,
    unique_poses,
    write_bvh,
)

REQUIRED = ("walk", "run", "jump", "wave", "sit", "squat", "kneel", "dance", "reach", "turn", "bow", "kick", "punch",
            "crouch", "climb", "lie", "stretch", "idle")


def _same_rotations(a: dict, b: dict) -> float:
    return max(np.abs(rotation_xyz(a.get(j, (0, 0, 0))) - rotation_xyz(b.get(j, (0, 0, 0)))).max()
               for j in set(a) | set(b))


def test_the_built_in_clips_exist_and_move():
    assert set(REQUIRED) <= set(CLIPS)
    for name in REQUIRED:
        motion = builtin_motion(name, frames=30)
        assert len(motion.poses) == 30
        assert _same_rotations(motion.poses[0], motion.poses[len(motion.poses) // 2]) > 0.05, name


def test_bvh_written_by_the_tests_round_trips_into_the_same_rotations(tmp_path):
    motion = builtin_motion("run", frames=12)
    again = read_bvh(write_bvh(motion, tmp_path / "run.bvh"))
    assert len(again.poses) == 12 and again.frame_time == pytest.approx(motion.frame_time, abs=1e-6)
    assert max(_same_rotations(a, b) for a, b in zip(motion.poses, again.poses)) < 1e-5


def test_bvh_in_another_channel_order_and_naming_reads_the_same(tmp_path):
    """A Mixamo/CMU-style file (names without prefix, XYZ channel order) means the same rotations."""
    motion = builtin_motion("wave", frames=4)
    text = write_bvh(motion, tmp_path / "a.bvh").read_text()
    names = {"hips": "Hips", "spine": "Spine", "chest": "Spine1", "neck": "Neck", "head": "Head"}
    for side, word in (("left", "Left"), ("right", "Right")):
        names.update({f"{side}_shoulder": f"{word}Shoulder", f"{side}_upper_arm": f"{word}Arm",
                      f"{side}_lower_arm": f"{word}ForeArm", f"{side}_hand": f"{word}Hand",
                      f"{side}_upper_leg": f"{word}UpLeg", f"{side}_lower_leg": f"{word}Leg",
                      f"{side}_foot": f"{word}Foot", f"{side}_toes": f"{word}ToeBase"})
    for ours, theirs in sorted(names.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(f"JOINT {ours}\n", f"JOINT {theirs}\n").replace(f"ROOT {ours}\n", f"ROOT {theirs}\n")
    (tmp_path / "b.bvh").write_text(text)
    again = read_bvh(tmp_path / "b.bvh")
    assert max(_same_rotations(a, b) for a, b in zip(motion.poses, again.poses)) < 1e-5


@pytest.mark.parametrize("content, reason", [
    ("", "not a BVH file"), ("HIERARCHY\nROOT hips\n{\n OFFSET 0 0\n", "not a BVH file"),
    ("TRUNCATE", "truncated"), ("UNKNOWN", "do not map")])
def test_bad_bvh_files_are_rejected_with_a_reason(tmp_path, content, reason):
    good = write_bvh(builtin_motion("walk", frames=4), tmp_path / "good.bvh").read_text()
    if content == "TRUNCATE":
        content = good[:len(good) - 200]
    elif content == "UNKNOWN":
        content = good.replace("hips", "Bone").replace("left_", "Bone_L").replace("right_", "Bone_R")
    (tmp_path / "bad.bvh").write_text(content)
    with pytest.raises(MotionError, match=reason):
        read_bvh(tmp_path / "bad.bvh")
    motions, rejects = load_motions(tmp_path)
    assert len(motions) == 1 and len(rejects) == 1 and "bad.bvh" in rejects[0]


def test_unique_poses_drop_near_duplicates_and_keep_lineage():
    motions, _ = load_motions("builtin")
    rows = unique_poses(motions)
    assert len(rows) >= len(CLIPS) and {r["motion"] for r in rows} == set(CLIPS)
    doubled = unique_poses(motions + [Motion("copy", 1 / 30, motions[0].poses)])
    assert len(doubled) == len(rows)  # an exact copy adds nothing
    assert [r["pose_id"] for r in rows] == list(range(len(rows)))
    assert all(0 <= r["frame"] < len(motions[0].poses) for r in rows)


def test_pairforge_poses_and_rendering_from_the_table(tmp_path, capsys):
    table = tmp_path / "poses.jsonl"
    assert main(["poses", "--out", str(table)]) == 0
    out = capsys.readouterr().out
    rows = read_pose_table(table)
    assert f"{len(rows)} unique poses" in out and (tmp_path / "poses.png").stat().st_size > 5000
    assert main(["render", "--out", str(tmp_path / "job"), "--runner", "local", "--quiet", "--set", f"pose_table={table}",
                 "--set", "characters.count=1", "--set", "poses_per_character=4", "--set", "resolution=[96, 144]"]) == 0
    from shards.reader import iter_dataset
    for record in iter_dataset(tmp_path / "job" / "pairs"):
        assert record["json"]["src"]["spec"]["pose"] == rows[record["json"]["pose_id"]]["pose"]
    assert json.loads(table.read_text().splitlines()[0])["pose_id"] == 0


@pytest.mark.blender
def test_bvh_written_by_blenders_exporter_round_trips_into_the_same_rotations(tmp_path):
    """Blender (z-up, XYZ channels, its own bone frames) exports the poses we key on an armature
    of the canonical skeleton; reading its BVH back gives the same joint rotations."""
    import subprocess
    import sys
    from pathlib import Path

    from render.skeleton import JOINT_PARENTS, JOINTS, rest_positions
    rest = rest_positions()
    motion = builtin_motion("dance", frames=6)
    spec = {"rest": {j: rest[j].tolist() for j in JOINTS}, "parents": {j: JOINT_PARENTS[j] for j in JOINTS},
            "poses": [{j: rotation_xyz(v).tolist() for j, v in p.items()} for p in motion.poses],
            "out": str(tmp_path / "blender.bvh")}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    script = Path(__file__).parent / "tools" / "blender_export_bvh.py"
    result = subprocess.run([sys.executable, str(script), str(tmp_path / "spec.json")], capture_output=True,
                            text=True, timeout=300)  # bpy stays out of the test process
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Zposition" in (tmp_path / "blender.bvh").read_text()
    again = read_bvh(tmp_path / "blender.bvh")
    assert max(_same_rotations(a, b) for a, b in zip(motion.poses, again.poses)) < 1e-3


def test_gltf_animation_clips_read_back_on_any_rig(tmp_path, capsys):
    """A clip keyed on an A-pose Mixamo rig with rolled bones reads back as the canonical poses."""
    from render.motions import add_gltf_animation, read_gltf_animations
    from render.procedural import sample_params, write_character_glb
    motion = builtin_motion("kick", frames=8)
    rig = write_character_glb(sample_params(4), tmp_path / "rig.glb", "mixamo", "A", 25.0)
    (tmp_path / "motions").mkdir()
    clip = add_gltf_animation(rig, motion, tmp_path / "motions" / "kick.glb")
    again = read_gltf_animations(clip)
    assert len(again) == 1 and len(again[0].poses) == 8
    assert max(_same_rotations(a, b) for a, b in zip(motion.poses, again[0].poses)) < 1e-3
    write_bvh(builtin_motion("walk", frames=8), tmp_path / "motions" / "walk.bvh")
    assert main(["poses", "--motions", str(tmp_path / "motions"), "--out", str(tmp_path / "t.jsonl")]) == 0
    library = json.loads((tmp_path / "t.motions.json").read_text())
    assert {m["name"] for m in library["motions"]} == {"kick", "walk"}
    assert sum(m["unique_poses"] for m in library["motions"]) == library["unique_poses"] > 2
