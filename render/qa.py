"""Invariant checks on decoded ``synthetic_pair`` records, for QA engineers: each check is a pure
function returning (passed, detail), and the report writers turn the findings into a contact
sheet and an HTML page with the failures first. ray_jobs.qa renders the samples."""
from __future__ import annotations

import hashlib
import html
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from render.contact_sheet import draw_skeleton, labelled, on_checkerboard, sheet
from render.poses import A_POSE, _segment_distance, joint_rotations
from render.skeleton import BODY_KEYPOINTS, LIMB_CAPSULES, PART_INDEX
from shards.schema import OPENPOSE18

ALPHA_COVERAGE = (0.01, 0.85)   # share of the source frame the character covers
FACE_CENTRE_PX, HEAD_HEIGHT_TOLERANCE = 2.0, 0.03
KEYPOINTS_INSIDE = 0.98
MIN_POSE_CHANGE_DEG = 10.0
PARITY_IOU, PARITY_KEYPOINT_PX = 0.9, 2.0
PARITY_VISIBILITY = 0.95         # share of keypoints both backends call visible, or both hidden


@dataclass
class Finding:
    backend: str
    key: str
    check: str
    passed: bool
    detail: str


def alpha_coverage(record: dict, standard) -> tuple[bool, str]:
    coverage = float((record["src.png"][..., 3] > 0).mean())
    lo, hi = ALPHA_COVERAGE
    return lo <= coverage <= hi, f"{coverage:.3f} of the frame (bounds {lo}..{hi})"


def face_box_at_fixed_pixels(record: dict, standard) -> tuple[bool, str]:
    height, width = record["std.png"].shape[:2]
    x0, y0, x1, y1 = record["json"]["std"]["face_box"]
    want = np.array([standard.face_center[0] * width, standard.face_center[1] * height])
    off = np.array([(x0 + x1) / 2, (y0 + y1) / 2]) - want
    scale = (y1 - y0) / (standard.head_height * height)
    ok = np.abs(off).max() <= FACE_CENTRE_PX and abs(scale - 1) <= HEAD_HEIGHT_TOLERANCE
    return bool(ok), f"centre off by ({off[0]:+.2f}, {off[1]:+.2f}) px, head height x{scale:.3f}"


def keypoints_inside_mask(record: dict, standard) -> tuple[bool, str]:
    """Every keypoint in frame, hidden ones included, lies on the character's silhouette."""
    alpha = record["src.png"][..., 3] > 0
    height, width = alpha.shape
    src = record["json"]["src"]
    framed = [(x, y) for (x, y, _), f in zip(src["keypoints"], src["in_frame"]) if f]
    inside = sum(bool(alpha[min(int(y), height - 1), min(int(x), width - 1)]) for x, y in framed)
    share = inside / len(framed) if framed else 0.0
    return share >= KEYPOINTS_INSIDE, f"{inside} of {len(framed)} keypoints in frame inside the alpha mask"


def standard_body_joints_visible(record: dict, standard) -> tuple[bool, str]:
    """The standardized render (front, A-pose) shows every body joint; the ears may be hidden (by
    hair), the face landmarks are not required."""
    keypoints = np.asarray(record["json"]["std"]["keypoints"])
    hidden = [OPENPOSE18[i] for i in BODY_KEYPOINTS if keypoints[i, 2] <= 0]
    return not hidden, f"hidden body joints: {', '.join(hidden)}" if hidden else "every body joint visible"


def not_empty_or_black(record: dict, standard) -> tuple[bool, str]:
    src, std = record["src.png"], record["std.png"]
    covered = src[..., 3] > 0
    if not covered.any():
        return False, "the source render is empty"
    brightness = float(src[covered][:, :3].mean())
    drawn = float((std.min(axis=2) < 250).mean())
    ok = brightness > 8 and drawn > 0.005
    return ok, f"source brightness {brightness:.0f}/255, standard {drawn:.3f} non-white"


def pose_differs_from_a_pose(record: dict, standard) -> tuple[bool, str]:
    pose = joint_rotations(record["json"]["src"]["spec"]["pose"])
    a_pose = joint_rotations(A_POSE)
    angles = [np.degrees(np.arccos(np.clip((np.trace(pose[j].T @ a_pose[j]) - 1) / 2, -1, 1))) for j in pose]
    largest = float(max(angles))
    return largest >= MIN_POSE_CHANGE_DEG, f"largest joint rotation away from the A-pose {largest:.1f} deg"


# ---- checks before a record is written (render.stage): each returns None or a reject ----------
# (reason, measurements); the reason's text before its first colon is its category.

MIN_COVERAGE = 0.002        # share of the frame a render must cover to count as not empty
MIN_ON_CHARACTER = 0.5      # share of the in-frame keypoints that must land on the character
HEAD_BOX_RATIO = (0.5, 1.1)  # face box height over the head's pixel height (hair makes the head taller)
PENETRATION = 1.0           # limb capsules may overlap by the thinner one's radius (its surface at the other's bone)


def empty_render(result: dict, which: str) -> tuple[str, dict] | None:
    """A render that shows (almost) nothing of the character."""
    coverage = float(result["mask"].mean())
    if coverage >= MIN_COVERAGE:
        return None
    return (f"empty render: the {which} render covers {coverage:.4f} of the frame (at least {MIN_COVERAGE})",
            {"coverage": round(coverage, 5)})


def misplaced_face(result: dict, standard) -> tuple[str, dict] | None:
    """A standardized render whose face box is off its fixed place, or out of proportion with
    the head the picture shows (the vertices the head bone dominates)."""
    height, width = result["mask"].shape
    x0, y0, x1, y1 = result["face_box"]
    off = np.array([(x0 + x1) / 2 - standard.face_center[0] * width, (y0 + y1) / 2 - standard.face_center[1] * height])
    scale = (y1 - y0) / (standard.head_height * height)
    measured = {"face_box": result["face_box"], "head_box": result["head_box"]}
    if np.abs(off).max() > FACE_CENTRE_PX or abs(scale - 1) > HEAD_HEIGHT_TOLERANCE:
        return (f"face box: centre off its place by ({off[0]:+.1f}, {off[1]:+.1f}) px, height x{scale:.3f} "
                f"of {standard.head_height * height:.0f} px", measured)
    if result["head_box"] is None:
        return "face box: no vertices follow the head", measured
    hx0, hy0, hx1, hy1 = result["head_box"]
    ratio = (y1 - y0) / max(hy1 - hy0, 1e-6)
    centre_inside = hx0 <= (x0 + x1) / 2 <= hx1 and hy0 <= (y0 + y1) / 2 <= hy1
    if not (HEAD_BOX_RATIO[0] <= ratio <= HEAD_BOX_RATIO[1] and centre_inside):
        return (f"face box: {y1 - y0:.0f} px tall for a head {hy1 - hy0:.0f} px tall in the picture "
                f"({'centred on it' if centre_inside else 'beside it'})", measured)
    return None


def keypoints_off_character(result: dict, reach: int = 2) -> tuple[str, dict] | None:
    """Keypoints that mostly miss the character's silhouette (within ``reach`` px): the skeleton
    and the picture disagree."""
    mask = result["mask"]
    height, width = mask.shape
    kp = np.asarray(result["keypoints"])
    on = 0
    framed = np.flatnonzero(result["in_frame"])
    for x, y in kp[framed, :2]:
        px, py = int(x), int(y)
        on += bool(mask[max(py - reach, 0):py + reach + 1, max(px - reach, 0):px + reach + 1].any())
    if len(framed) and on >= MIN_ON_CHARACTER * len(framed):
        return None
    return (f"keypoints off character: {on} of the {len(framed)} keypoints in frame lie on it",
            {"on_character": on, "in_frame": int(len(framed))})


def limb_radii(character) -> dict[str, float]:
    """Per limb capsule (render.skeleton.LIMB_CAPSULES), its radius at rest: the lower quartile of
    the distances to the bone of the vertices its body part dominates (the limb itself, not the
    sleeve or skirt around it)."""
    faces, parts = character.stacked_faces()
    vertices = np.vstack([prim.positions for prim in character.primitives]).astype(float)
    rest = {joint: character.global_rest[node][:3, 3] for joint, node in character.joint_nodes.items()}
    radii = {}
    for name, a, b in LIMB_CAPSULES:
        if a not in rest or b not in rest:
            continue
        points = vertices[np.unique(faces[parts == PART_INDEX[name]])]
        if len(points):
            radii[name] = float(np.percentile(_segment_distance(points, rest[a], rest[b]), 25))
    return radii


def interpenetration(points: dict[str, np.ndarray], radii: dict[str, float],
                     samples: int = 17) -> tuple[str, dict] | None:
    """Limbs that pass through each other: two limb capsules (posed ``points`` of their joints,
    rest ``radii``) that share no joint and overlap by more than PENETRATION of the thinner
    one's radius. Such a pose cannot be photographed."""
    capsules = [(name, a, b) for name, a, b in LIMB_CAPSULES if name in radii]
    along = np.linspace(0.0, 1.0, samples)[:, None]
    worst = None
    for i, (name_i, a_i, b_i) in enumerate(capsules):
        line = points[a_i] + along * (points[b_i] - points[a_i])
        for name_j, a_j, b_j in capsules[i + 1:]:
            if {a_i, b_i} & {a_j, b_j}:
                continue
            distance = float(_segment_distance(line, points[a_j], points[b_j]).min())
            depth = radii[name_i] + radii[name_j] - distance
            allowed = PENETRATION * min(radii[name_i], radii[name_j])
            if depth > allowed and (worst is None or depth - allowed > worst[0]):
                worst = (depth - allowed, name_i, name_j, depth)
    if worst is None:
        return None
    _, name_i, name_j, depth = worst
    return (f"interpenetration: {name_i} passes {100 * depth:.1f} cm into {name_j}",
            {"limbs": [name_i, name_j], "depth_m": round(depth, 4)})


RECORD_CHECKS = (alpha_coverage, face_box_at_fixed_pixels, keypoints_inside_mask, not_empty_or_black,
                 pose_differs_from_a_pose, standard_body_joints_visible)


def joint_visibility(records: list[dict], side: str = "src") -> dict[str, dict]:
    """Per OpenPose-18 keypoint across ``records`` (decoded json of synthetic pairs): the share in
    frame, and of those the share visible (not covered by another body part)."""
    out = {}
    keypoints = np.array([meta[side]["keypoints"] for meta in records], float).reshape(-1, len(OPENPOSE18), 3)
    in_frame = np.array([meta[side].get("in_frame", [1] * len(OPENPOSE18)) for meta in records],
                        bool).reshape(-1, len(OPENPOSE18))
    for i, name in enumerate(OPENPOSE18):
        framed = int(in_frame[:, i].sum())
        out[name] = {"records": len(records), "in_frame": framed,
                     "visible_of_in_frame": round(float((keypoints[in_frame[:, i], i, 2] > 0).mean()), 4)
                     if framed else None}
    return out


def visibility_lines(table: dict[str, dict]) -> list[str]:
    """One line per keypoint of a joint_visibility table."""
    return [f"  {name:15s} visible in {row['visible_of_in_frame']:.0%} of the {row['in_frame']} records "
            f"with it in frame (of {row['records']})" if row["in_frame"] else
            f"  {name:15s} in frame in none of {row['records']} records" for name, row in table.items()]


def check_records(backend: str, records: list[dict], standard) -> list[Finding]:
    """Every record check, and one standard render per character (byte-identical across its pairs)."""
    findings = []
    std_digests: dict[str, set] = {}
    for record in records:
        for check in RECORD_CHECKS:
            passed, detail = check(record, standard)
            findings.append(Finding(backend, record["__key__"], check.__name__, passed, detail))
        std_digests.setdefault(record["json"]["character_id"], set()).add(
            hashlib.sha256(record["std.png"].tobytes()).hexdigest())
    for character, digests in sorted(std_digests.items()):
        findings.append(Finding(backend, character, "std_identical_across_pairs", len(digests) == 1,
                                f"{len(digests)} distinct standard render(s)"))
    return findings


def check_parity(first: dict[str, dict], second: dict[str, dict], names: tuple[str, str]) -> list[Finding]:
    """The same specs on two backends: silhouettes and keypoints agree, and so does visibility."""
    findings, agree = [], []
    for key in sorted(set(first) & set(second)):
        a, b = first[key], second[key]
        ma, mb = a["src.png"][..., 3] > 0, b["src.png"][..., 3] > 0
        iou = float((ma & mb).sum() / max((ma | mb).sum(), 1))
        # Keypoints labelled visible by both: hidden ones may lie off the frame or behind the camera.
        ka, kb = np.asarray(a["json"]["src"]["keypoints"], float), np.asarray(b["json"]["src"]["keypoints"], float)
        both = (ka[:, 2] > 0) & (kb[:, 2] > 0)
        offset = float(np.abs(ka[both, :2] - kb[both, :2]).max()) if both.any() else 0.0
        findings.append(Finding("+".join(names), key, "backends_agree",
                                iou >= PARITY_IOU and offset <= PARITY_KEYPOINT_PX,
                                f"mask IoU {iou:.3f}, the {int(both.sum())} keypoints visible on both "
                                f"within {offset:.2f} px"))
        agree.append((ka[:, 2] > 0) == (kb[:, 2] > 0))
    if agree:
        share = float(np.mean(agree))
        findings.append(Finding("+".join(names), "all", "backends_agree_on_visibility", share >= PARITY_VISIBILITY,
                                f"{share:.1%} of {np.size(agree)} keypoints visible on both or hidden on both "
                                f"(at least {PARITY_VISIBILITY:.0%})"))
    return findings


def _thumbnails(record: dict) -> tuple[Image.Image, Image.Image]:
    src = record["src.png"]
    with_skeleton = draw_skeleton(on_checkerboard(src), record["json"]["src"]["keypoints"],
                                  radius=max(3, src.shape[1] // 100))
    return with_skeleton, Image.fromarray(record["std.png"])


def write_contact_sheet(by_backend: dict[str, dict[str, dict]], size: tuple[int, int], path: Path,
                        thumb_width: int = 160) -> Path:
    """Per sample: source with skeleton (hidden keypoints hollow) and standard render of each
    backend, side by side (``size`` is the render resolution), and under them each backend's
    per-joint visibility."""
    keys = sorted(set.union(*(set(records) for records in by_backend.values())))
    rows = []
    for key in keys:
        row = []
        for backend, records in by_backend.items():
            if key in records:
                src, std = _thumbnails(records[key])
                row += [labelled(src, f"{backend} {key}"), std]
            else:  # rejected on this backend: a pink pair of cells
                row += [Image.new("RGB", size, (255, 220, 220))] * 2
        rows.append(row)
    picture = sheet(rows, thumb_width, groups=1 if len(by_backend) > 1 else 2)
    lines = []
    for backend, records in by_backend.items():
        table = joint_visibility([record["json"] for record in records.values()])
        lines.append(f"{backend}: per joint, visible of in frame")
        lines += [f"{name} {row['visible_of_in_frame']:.0%}" if row["in_frame"] else f"{name} -"
                  for name, row in table.items()]
    with_table = Image.new("RGB", (picture.width, picture.height + 14 * (-(-len(lines) // 3)) + 8), (255, 255, 255))
    with_table.paste(picture, (0, 0))
    draw = ImageDraw.Draw(with_table)
    for k, line in enumerate(lines):  # three columns
        draw.text((6 + (k % 3) * picture.width // 3, picture.height + 4 + 14 * (k // 3)), line, fill=(0, 0, 0))
    with_table.save(path)
    return path


def write_report(findings: list[Finding], rejects: list[dict], by_backend: dict[str, dict[str, dict]],
                 out: Path, settings: dict) -> Path:
    """report.html (failures first, with thumbnails) and report.json beside it."""
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    for backend, records in by_backend.items():
        for key, record in records.items():
            src, std = _thumbnails(record)
            src.save(images / f"{backend}-{key}-src.png")
            std.save(images / f"{backend}-{key}-std.png")
    failed = [f for f in findings if not f.passed]
    visibility = {backend: joint_visibility([record["json"] for record in records.values()])
                  for backend, records in by_backend.items()}
    (out / "report.json").write_text(json.dumps({"settings": settings, "failed": len(failed) + len(rejects),
                                                 "rejects": rejects, "visibility": visibility,
                                                 "findings": [asdict(f) for f in findings]}, indent=1))
    visibility_rows = "".join(
        f"<tr><td>{html.escape(name)}</td>" + "".join(
            f"<td>{row[name]['visible_of_in_frame']:.0%} of {row[name]['in_frame']}</td>" if row[name]["in_frame"]
            else "<td>never in frame</td>" for row in visibility.values()) + "</tr>" for name in OPENPOSE18)
    groups: dict[tuple[str, str], list[Finding]] = {}
    for finding in findings:
        groups.setdefault((finding.backend, finding.key), []).append(finding)
    rows = [(False, r["backend"], r["key"], f'<li class="fail">&#10007; REJECT rendered: {html.escape(r["error"])}</li>')
            for r in rejects]
    for (backend, key), group in groups.items():
        items = "".join(f'<li class="{"pass" if f.passed else "fail"}">{"&#10003;" if f.passed else "&#10007;"} '
                        f"{html.escape(f.check)}: {html.escape(f.detail)}</li>"
                        for f in sorted(group, key=lambda f: (f.passed, f.check)))
        rows.append((all(f.passed for f in group), backend, key, items))
    body = []
    for passed, backend, key, items in sorted(rows, key=lambda r: (r[0], r[1], r[2])):
        thumbs = "".join(f'<img src="images/{b}-{key}-{side}.png" height="160" title="{b} {side}">'
                         for b in backend.split("+") if key in by_backend.get(b, {}) for side in ("src", "std"))
        body.append(f'<tr class="{"pass" if passed else "fail"}"><td>{"pass" if passed else "FAIL"}</td>'
                    f"<td>{html.escape(backend)}</td><td>{html.escape(key)}</td><td><ul>{items}</ul></td>"
                    f"<td>{thumbs}</td></tr>")
    verdict = "all invariants hold" if not failed and not rejects else f"{len(failed) + len(rejects)} failure(s)"
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>pairforge qa: {verdict}</title>
<style>body{{font-family:sans-serif;margin:1.5em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;vertical-align:top}} tr.fail{{background:#fde2e2}}
tr.pass{{background:#eef8ee}} li.fail{{color:#a00;font-weight:bold}} ul{{margin:0;padding-left:1.2em}}
img{{margin-right:4px;background:#ddd}}</style></head><body>
<h1>pairforge qa: {verdict}</h1>
<p>{len(findings) - len(failed)} checks passed, {len(failed)} failed, {len(rejects)} render reject(s).
Settings: {html.escape(json.dumps(settings))}</p>
<p><a href="contact_sheet.png">contact sheet</a> · <a href="report.json">report.json</a></p>
<h2>Per joint: visible (in frame, not covered by another body part) of the samples with it in frame</h2>
<table><tr><th>keypoint</th>{"".join(f"<th>{html.escape(b)}</th>" for b in visibility)}</tr>{visibility_rows}</table>
<h2>Checks</h2>
<table><tr><th>result</th><th>backend</th><th>sample</th><th>checks</th><th>source · standard</th></tr>
{"".join(body)}</table></body></html>"""
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
