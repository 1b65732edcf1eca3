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
from PIL import Image

from render.contact_sheet import draw_skeleton, labelled, on_checkerboard, sheet
from render.poses import A_POSE, joint_rotations

ALPHA_COVERAGE = (0.01, 0.85)   # share of the source frame the character covers
FACE_CENTRE_PX, HEAD_HEIGHT_TOLERANCE = 2.0, 0.03
KEYPOINTS_INSIDE = 0.98
MIN_POSE_CHANGE_DEG = 10.0
PARITY_IOU, PARITY_KEYPOINT_PX = 0.9, 2.0


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
    alpha = record["src.png"][..., 3] > 0
    height, width = alpha.shape
    visible = [(x, y) for x, y, v in record["json"]["src"]["keypoints"] if v > 0]
    inside = sum(bool(alpha[min(int(y), height - 1), min(int(x), width - 1)]) for x, y in visible)
    share = inside / len(visible) if visible else 0.0
    return share >= KEYPOINTS_INSIDE, f"{inside} of {len(visible)} visible keypoints inside the alpha mask"


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


RECORD_CHECKS = (alpha_coverage, face_box_at_fixed_pixels, keypoints_inside_mask, not_empty_or_black,
                 pose_differs_from_a_pose)


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
    """The same specs on two backends: silhouettes and keypoints agree."""
    findings = []
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
    return findings


def _thumbnails(record: dict) -> tuple[Image.Image, Image.Image]:
    src = record["src.png"]
    with_skeleton = draw_skeleton(on_checkerboard(src), record["json"]["src"]["keypoints"],
                                  radius=max(3, src.shape[1] // 100))
    return with_skeleton, Image.fromarray(record["std.png"])


def write_contact_sheet(by_backend: dict[str, dict[str, dict]], size: tuple[int, int], path: Path,
                        thumb_width: int = 160) -> Path:
    """Per sample: source with skeleton and standard render of each backend, side by side
    (``size`` is the render resolution)."""
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
    sheet(rows, thumb_width, groups=1 if len(by_backend) > 1 else 2).save(path)
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
    (out / "report.json").write_text(json.dumps({"settings": settings, "failed": len(failed) + len(rejects),
                                                 "rejects": rejects, "findings": [asdict(f) for f in findings]},
                                                indent=1))
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
<table><tr><th>result</th><th>backend</th><th>sample</th><th>checks</th><th>source · standard</th></tr>
{"".join(body)}</table></body></html>"""
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
