"""Motions in the formats animation libraries ship (issue 23): skeleton-only glTF, VRM Animation
(.vrma), BVH at any rest pose and FBX (Mixamo names, through the Blender worker). Each file is
written here from a known canonical motion and read back to the same poses (within 1 degree per
joint); a file that is no humanoid, lacks required bones or has an empty animation is a reject
with its reason while the others go on; the pose library reaches a target by sampling between
frames, or says why it cannot."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from render.motions import (
    CLIPS,
    Motion,
    MotionError,
    builtin_motion,
    load_motions,
    pose_library,
    read_bvh,
    read_gltf_animations,
    read_pose_table,
    write_bvh,
)
from render.poses import A_POSE
from tests.helpers import VRM_BONE_NAMES, max_joint_error, write_skeleton_motion

TOLERANCE_DEG = 1.0
HAS_BPY = importlib.util.find_spec("bpy") is not None


def _swapped_sides(names: dict) -> dict:
    """Node names that lie: every left bone is named as the right one and vice versa."""
    flip = {"left": "right", "right": "left"}
    return {joint: names[f"{flip[joint.split('_')[0]]}_{joint.split('_', 1)[1]}"] if joint.split("_")[0] in flip
            else names[joint] for joint in names}


def write_fbx(motion: Motion, path: Path, mesh: bool, root: list | None = None) -> Path:
    """``motion`` on an armature with Mixamo's names, exported by Blender's FBX exporter (bpy in a
    child process: never in the test's)."""
    from render.bonemap import BONE_NAMES
    from render.geometry import rotation_xyz
    from render.skeleton import JOINT_PARENTS, JOINTS, rest_positions
    rest = rest_positions()
    spec = {"rest": {j: rest[j].tolist() for j in JOINTS}, "parents": {j: JOINT_PARENTS[j] for j in JOINTS},
            "names": BONE_NAMES["mixamo"], "mesh": mesh, "fps": round(1 / motion.frame_time),
            "poses": [{j: rotation_xyz(v).tolist() for j, v in p.items()} for p in motion.poses],
            "root": root, "out": str(path)}
    spec_path = path.with_suffix(".json")
    spec_path.write_text(json.dumps(spec))
    script = Path(__file__).parent / "tools" / "blender_export_fbx.py"
    result = subprocess.run([sys.executable, str(script), str(spec_path)], capture_output=True, text=True, timeout=300)
    spec_path.unlink()
    assert result.returncode == 0, result.stderr[-2000:]
    return path


# -- 1. skeleton-only glTF and .vrma ------------------------------------------------------------

@pytest.mark.parametrize("kind, options", [
    ("gltf-T", {}), ("gltf-A-rolled", {"rest_pose": A_POSE, "roll_degrees": 30.0}),
    ("gltf-mixamo-names", {"names": "mixamo"}), ("vrma", {"vrma": True}),
    ("vrma-A", {"vrma": True, "rest_pose": A_POSE})])
def test_skeleton_only_gltf_and_vrma_read_back_to_the_same_poses(tmp_path, kind, options):
    from render.bonemap import BONE_NAMES
    if options.get("names") == "mixamo":
        options = {**options, "names": BONE_NAMES["mixamo"]}
    motion = builtin_motion("dance", frames=10)
    path = write_skeleton_motion(motion, tmp_path / f"{kind}.{'vrma' if 'vrma' in kind else 'glb'}", **options)
    motions, rejects = load_motions(tmp_path)
    assert rejects == [] and len(motions) == 1 and len(motions[0].poses) == 10
    assert motions[0].source == str(path)
    assert max_joint_error(motion.poses, motions[0].poses) < TOLERANCE_DEG  # measured: 1.2e-6 degrees


def test_the_vrma_human_bones_table_wins_over_bone_names(tmp_path):
    """Nodes named as the other side's bones: the humanBones table (by node) says which is which.
    The same file without the table maps by the (lying) names and reads the arms swapped."""
    motion = builtin_motion("wave", frames=6)
    lying = _swapped_sides({j: j for j in VRM_BONE_NAMES})  # canonical names, left and right swapped
    truth = {joint: lying[joint] for joint in VRM_BONE_NAMES}  # the table names each joint's real node
    vrma = write_skeleton_motion(motion, tmp_path / "a.vrma", names=lying, vrma=True, human_bones=truth)
    assert max_joint_error(motion.poses, read_gltf_animations(vrma)[0].poses) < TOLERANCE_DEG
    plain = write_skeleton_motion(motion, tmp_path / "b.glb", names=lying)
    assert max_joint_error(motion.poses, read_gltf_animations(plain)[0].poses) > 30


def test_vrma_expression_tracks_become_canonical_expressions(tmp_path):
    motion = builtin_motion("idle", frames=4)
    tracks = [{"happy": 0.0, "aa": 1.0}, {"happy": 0.5, "blink": 1.0}, {"happy": 1.0}, {"surprised": 1.0}]
    path = write_skeleton_motion(motion, tmp_path / "face.vrma", vrma=True, expressions=tracks)
    read = read_gltf_animations(path)[0]
    assert read.expressions == [{"mouth_open": 1.0}, {"smile": 0.5, "eyes_closed": 1.0}, {"smile": 1.0}, {}]
    rows = pose_library([read])[0]
    assert all(row.get("expression", {}) == read.expressions[row["frame"]] for row in rows)


# -- 2. BVH at any rest pose ---------------------------------------------------------------------

def test_bvh_from_a_t_rest_and_an_a_rest_file_give_the_same_poses(tmp_path):
    motion = builtin_motion("punch", frames=12)
    t_rest = read_bvh(write_bvh(motion, tmp_path / "t.bvh"))
    a_rest = read_bvh(write_bvh(motion, tmp_path / "a.bvh", rest_pose=A_POSE))
    assert "OFFSET 0.000000" not in (tmp_path / "a.bvh").read_text().split("MOTION")[0].split("JOINT left_lower_arm")[1][:60]
    assert max_joint_error(motion.poses, t_rest.poses) < TOLERANCE_DEG
    assert max_joint_error(motion.poses, a_rest.poses) < TOLERANCE_DEG  # measured: 1.2e-6 degrees
    # An A-rest file at its own rest (every channel zero) is the A-pose, not the T-pose.
    text = write_bvh(Motion("rest", 1 / 30, [A_POSE]), tmp_path / "rest.bvh", rest_pose=A_POSE).read_text()
    values = np.array(text.split("Frame Time:")[1].split()[1:], float)
    assert np.abs(values[3:]).max() < 1e-4
    assert max_joint_error([A_POSE], read_bvh(tmp_path / "rest.bvh").poses) < TOLERANCE_DEG
    # Read without the alignment (as before issue 23) the A-rest file's arms were 45 degrees off.
    assert max_joint_error([A_POSE], [{}]) == pytest.approx(45, abs=0.01)


# -- 3. FBX through the Blender worker -----------------------------------------------------------

@pytest.mark.blender
@pytest.mark.timeout(600)
def test_fbx_with_mixamo_names_with_and_without_a_mesh_reads_back(tmp_path):
    motion = builtin_motion("kick", frames=8)
    root = [[0.1 * f, 0.0, 0.05 * f] for f in range(8)]
    (tmp_path / "m").mkdir()
    write_fbx(motion, tmp_path / "m" / "kick_mesh.fbx", mesh=True, root=root)
    write_fbx(motion, tmp_path / "m" / "kick_bones.fbx", mesh=False, root=root)
    for keep in (False, True):
        motions, rejects = load_motions(tmp_path / "m", keep_root=keep)
        assert rejects == [] and {m.name for m in motions} == {"kick_mesh", "kick_bones"}
        for read in motions:
            assert len(read.poses) == 8 and read.frame_time == pytest.approx(1 / 30)
            assert max_joint_error(motion.poses, read.poses) < TOLERANCE_DEG  # measured: 1e-4 degrees
            if keep:  # the hips travel: kept as metres in pairforge's frame, the poses root-relative
                assert np.allclose(read.root - read.root[0], root, atol=1e-4)
            else:
                assert read.root is None
    rows, _ = pose_library(load_motions(tmp_path / "m", keep_root=True)[0])
    assert all(len(row["root"]) == 3 for row in rows)


@pytest.mark.blender
@pytest.mark.timeout(600)
def test_a_broken_or_unmappable_fbx_is_a_reject(tmp_path):
    (tmp_path / "broken.fbx").write_bytes(b"Kaydara FBX Binary  \x00\x1a\x00" + b"\x00" * 64)
    write_bvh(builtin_motion("walk", frames=4), tmp_path / "walk.bvh")
    motions, rejects = load_motions(tmp_path)
    assert [m.name for m in motions] == ["walk"] and len(rejects) == 1 and "broken.fbx" in rejects[0]


# -- rejects -------------------------------------------------------------------------------------

def test_non_humanoid_incomplete_and_empty_motion_files_are_rejects_with_reasons(tmp_path):
    from tests.helpers import rewrite_glb
    motion = builtin_motion("walk", frames=4)
    good = write_skeleton_motion(motion, tmp_path / "good.glb")

    def rename(gltf):
        for i, node in enumerate(gltf["nodes"]):
            node["name"] = f"Bone.{i:03d}"
    rewrite_glb(good, tmp_path / "robot.glb", rename)
    human = {j: n for j, n in VRM_BONE_NAMES.items() if j != "left_hand"}
    write_skeleton_motion(motion, tmp_path / "handless.vrma", vrma=True, human_bones=human)
    rewrite_glb(good, tmp_path / "still.glb", lambda gltf: gltf.pop("animations"))

    def untargeted(gltf):
        for channel in gltf["animations"][0]["channels"]:
            channel["target"]["path"] = "scale"
    rewrite_glb(good, tmp_path / "scaled.glb", untargeted)
    (tmp_path / "junk.vrma").write_bytes(b"not a glb at all, just some bytes")
    write_bvh(builtin_motion("run", frames=4), tmp_path / "run.bvh")
    motions, rejects = load_motions(tmp_path)
    assert sorted(m.name for m in motions) == ["run", "walk"]
    reasons = {r.split(":")[0]: r for r in rejects}
    assert set(reasons) == {"robot.glb", "handless.vrma", "still.glb", "scaled.glb", "junk.vrma"}
    assert "not a humanoid" in reasons["robot.glb"]
    assert "not a humanoid" in reasons["handless.vrma"] and "left_hand" in reasons["handless.vrma"]
    assert "empty animation" in reasons["still.glb"] and "empty animation" in reasons["scaled.glb"]
    with pytest.raises(MotionError, match="^junk.vrma: not a binary glTF"):
        read_gltf_animations(tmp_path / "junk.vrma")


# -- 4. the pose library -------------------------------------------------------------------------

def test_the_pose_library_samples_between_frames_to_reach_a_target():
    motions = [builtin_motion(name, frames=8) for name in ("walk", "run", "wave", "squat")]
    plain, _ = pose_library(motions)
    rows, report = pose_library(motions, target=len(plain) + 10)
    assert report["reached"] and report["substeps"] > 1 and len(rows) == len(plain) + 10
    assert [r["pose_id"] for r in rows] == list(range(len(rows)))
    assert any(isinstance(r["frame"], float) and r["frame"] % 1 for r in rows)  # sub-frames
    assert {r["motion"] for r in rows} == {m.name for m in motions}
    rows, report = pose_library(motions[:1], target=5000)
    assert not report["reached"] and "short of the target 5000" in report["reason"] and len(rows) == report["found"]


def test_pairforge_poses_over_built_ins_and_every_format(tmp_path, capsys):
    from ray_jobs.cli import main
    folder = tmp_path / "motions"
    folder.mkdir()
    write_skeleton_motion(builtin_motion("kick", frames=20), folder / "kick.vrma", vrma=True)
    write_skeleton_motion(builtin_motion("climb", frames=20), folder / "climb.glb", rest_pose=A_POSE)
    write_bvh(builtin_motion("punch", frames=20), folder / "punch_t.bvh")
    write_bvh(builtin_motion("bow", frames=20), folder / "bow_a.bvh", rest_pose=A_POSE)
    if HAS_BPY:
        write_fbx(builtin_motion("dance", frames=20), folder / "dance_mixamo.fbx", mesh=False)
    (folder / "robot.bvh").write_text("HIERARCHY\nROOT x\n")
    table = tmp_path / "poses.jsonl"
    assert main(["poses", "--motions", "builtin", str(folder), "--target", "3817", "--out", str(table)]) == 0
    out = capsys.readouterr().out
    print(out)
    rows = read_pose_table(table)
    library = json.loads(table.with_suffix(".motions.json").read_text())
    names = {m["name"] for m in library["motions"]}
    assert set(CLIPS) | {"kick", "climb", "punch_t", "bow_a"} <= names  # the file motions' names don't clash
    assert "rejected: robot.bvh" in out and "target 3817" in out
    assert sum(m["unique_poses"] for m in library["motions"]) == library["unique_poses"] == len(rows)
    assert library["sampling"]["target"] == 3817 and (tmp_path / "poses.png").stat().st_size > 5000
    for m in library["motions"]:
        assert f"  {m['name']}: {m['unique_poses']} of {m['frames']} frames" in out
