"""The HTML report of a curation run: kept and rejected counts per reason, read from the shard
manifests, with a few example thumbnails (PNG files beside the page) for each reason."""
from __future__ import annotations

import html
import io
import json
from collections import defaultdict

from PIL import Image

from shards import storage
from shards.reader import iter_shard, shard_paths
from shards.stage import reject_reason

THUMB = 160


def _manifests(folder: str) -> list[tuple[str, dict]]:
    out = []
    for shard in shard_paths(folder):
        try:
            out.append((shard, json.loads(storage.read_bytes(shard[:-len(".tar")] + ".json"))))
        except (OSError, ValueError):
            continue
    return out


def thumbnail(source: str) -> Image.Image | None:
    """A small picture of a source: an image file, an image member of a shard (``shard#key``),
    or a character asset (its canonical front render); None when there is nothing to show."""
    from curate.photos import PhotoChecks, PhotoRejected, decode
    try:
        if "#" in source and source.split("#")[0].endswith(".tar"):
            shard, key = source.rsplit("#", 1)
            record = next(r for r in iter_shard(shard, decode=False) if r["__key__"] == key)
            data = next(record[m] for m in ("jpg", "jpeg", "png", "webp", "image.jpg") if m in record)
        elif source.lower().endswith((".glb", ".vrm")):
            from curate.assets import canonical_render
            from render.characters import load_character
            # the duplicate signature's own 64 px picture (a dense splat), enlarged
            return Image.fromarray(canonical_render(load_character(source))).resize((THUMB, THUMB), Image.NEAREST)
        else:
            data = storage.read_bytes(source)
        # the photos' own decode: upright, any mode to RGB, scaled down while decoding
        return Image.fromarray(decode(data, PhotoChecks(work_side=THUMB)).work)
    except (PhotoRejected, OSError, ValueError, KeyError, StopIteration, ImportError):
        return None  # a reject's source is often exactly what cannot be opened


def _kept_thumbnail(shard: str, key: str) -> Image.Image | None:
    record = next((r for r in iter_shard(shard, decode=False) if r["__key__"] == key), None)
    if record is None:
        return None
    meta = json.loads(record["json"])
    if "image.jpg" in record:
        image = Image.open(io.BytesIO(record["image.jpg"])).convert("RGB")
        mask = Image.open(io.BytesIO(record["mask.png"])).convert("L").resize(image.size)
        tint = Image.new("RGB", image.size, (40, 200, 90))
        image = Image.composite(Image.blend(image, tint, 0.35), image, mask)  # the person mask, tinted
        image.thumbnail((THUMB, THUMB))
        return image
    return thumbnail(meta.get("source", ""))


def write_report(out_dir: str, folders: list[str], title: str, examples: int = 6) -> str:
    """OUT/report.html and OUT/report/*.png from the manifests of ``folders`` (the kept records
    are those of the last folder)."""
    by_reason: dict[str, list[dict]] = defaultdict(list)
    for folder in folders:
        for _, manifest in _manifests(folder):
            for reject in manifest.get("rejects", []):
                by_reason[reject_reason(reject["error"])].append(reject)
    kept = [(shard, key) for shard, manifest in _manifests(folders[-1]) for key in manifest.get("keys", [])]
    pictures = storage.join(out_dir, "report")
    storage.makedirs(pictures)

    def figure(image, name: str, caption: str) -> str:
        if image is None:
            return f'<figure><div class="none">no preview</div><figcaption>{html.escape(caption)}</figcaption></figure>'
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        storage.write_bytes(storage.join(pictures, f"{name}.png"), buffer.getvalue())
        return (f'<figure><img src="report/{name}.png" alt=""><figcaption>{html.escape(caption)}</figcaption>'
                f'</figure>')

    total = len(kept) + sum(len(r) for r in by_reason.values())
    sections = [f"<h2>kept: {len(kept)}</h2><div class=row>"
                + "".join(figure(_kept_thumbnail(shard, key), f"kept-{key}", key) for shard, key in kept[:examples])
                + "</div>"]
    for reason, rejects in sorted(by_reason.items(), key=lambda kv: -len(kv[1])):
        cells = "".join(figure(thumbnail(r.get("source", "")), f"{reason}-{r['key']}", f"{r['key']}: {r['error']}")
                        for r in rejects[:examples])
        sections.append(f"<h2>{html.escape(reason)}: {len(rejects)}</h2><div class=row>{cells}</div>")
    counts = "".join(f"<tr><td>{html.escape(reason)}</td><td>{len(r)}</td></tr>"
                     for reason, r in sorted(by_reason.items(), key=lambda kv: -len(kv[1])))
    page = (f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title><style>"
            "body{font-family:sans-serif;margin:2em} .row{display:flex;flex-wrap:wrap;gap:8px}"
            f"figure{{margin:0;width:{THUMB}px;font-size:11px}} img{{max-width:{THUMB}px;border:1px solid #ccc}}"
            f" .none{{width:{THUMB}px;height:{THUMB // 2}px;background:#eee;color:#888;display:flex;"
            "align-items:center;justify-content:center} td{padding:2px 12px}</style>"
            f"<h1>{html.escape(title)}</h1><p>{total} inputs: {len(kept)} kept, {total - len(kept)} rejected</p>"
            f"<table><tr><th>reason</th><th>rejected</th></tr>{counts}</table>" + "".join(sections))
    path = storage.join(out_dir, "report.html")
    storage.write_bytes(path, page.encode())
    return path
