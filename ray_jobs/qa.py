"""``pairforge qa``: render N seeded samples in-process on one or both backends, decode them as a
reader would, check the invariants (render.qa), and write a contact sheet and an HTML report."""
from __future__ import annotations

from pathlib import Path

BACKEND_CHOICES = {"pyrender": ("pyrender",), "blender": ("blender",), "both": ("pyrender", "blender")}


def run_qa(sample: int, out: str | Path, backend: str = "pyrender", overrides: list[str] = ()) -> dict:
    """Returns {"ok", "failures", "report", "contact_sheet", "lines"}."""
    from ray_jobs.config import load_config
    from ray_jobs.jobs import character_files
    from render.config import RenderConfig
    from render.qa import (check_parity, check_records, joint_visibility, visibility_lines, write_contact_sheet,
                           write_report)
    from render.stage import RenderStage, plan_items
    from shards.reader import decode_member

    if sample < 1:
        raise ValueError("--sample must be >= 1")
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    characters = max(1, (sample + 1) // 2)  # two pairs per character, so the standard render can be compared
    base = [f"characters.count={characters}", "poses_per_character=2", *overrides]
    by_backend: dict[str, dict[str, dict]] = {}
    findings, rejects = [], []
    settings = {"sample": sample, "backends": list(BACKEND_CHOICES[backend])}
    for name in BACKEND_CHOICES[backend]:
        config = load_config(RenderConfig, "demo", [*base, f"backend={name}"])
        items = plan_items(config, character_files(config, out))[:sample]
        stage = RenderStage(config, log_dir=str(out / "logs"))
        try:
            stage.setup()
            records = stage.process_batch(items)
        finally:
            stage.teardown()
        decoded = {}
        for record in records:
            if record.get("status", "ok") != "ok":
                rejects.append({"backend": name, "key": record["__key__"], "error": record.get("error") or "unknown"})
                continue
            decoded[record["__key__"]] = {"__key__": record["__key__"],
                                          **{m: decode_member(m, record[m]) for m in ("src.png", "std.png", "json")}}
        by_backend[name] = decoded
        findings += check_records(name, list(decoded.values()), config.standard)
        settings[name] = {"resolution": list(config.resolution)} if name == "pyrender" else \
            {"resolution": list(config.resolution), "engine": config.blender.engine, "samples": config.blender.samples}
    if len(by_backend) == 2:
        findings += check_parity(by_backend["pyrender"], by_backend["blender"], ("pyrender", "blender"))
    sheet = write_contact_sheet(by_backend, tuple(config.resolution), out / "contact_sheet.png")
    report = write_report(findings, rejects, by_backend, out, settings)
    failures = [f for f in findings if not f.passed]
    lines = [f"qa: {sample} sample(s) on {', '.join(by_backend)}: {len(findings) - len(failures)} checks passed, "
             f"{len(failures)} failed, {len(rejects)} render reject(s)"]
    lines += [f"  FAIL {f.backend} {f.key} {f.check}: {f.detail}" for f in failures[:20]]
    lines += [f"  REJECT {r['backend']} {r['key']}: {r['error']}" for r in rejects[:20]]
    for name, records in by_backend.items():
        lines.append(f"per-joint visibility on {name} (source renders):")
        lines += visibility_lines(joint_visibility([record["json"] for record in records.values()]))
    lines += [f"contact sheet: {sheet}", f"report: {report}"]
    return {"ok": not failures and not rejects, "failures": len(failures) + len(rejects), "report": report,
            "contact_sheet": sheet, "lines": lines}
