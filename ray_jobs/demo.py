"""``pairforge demo``: the main job on the embedded default, end to end: procedural characters ->
synthetic pairs -> composites on backgrounds -> router scenes -> captions (from the renders'
metadata) -> a few steps of a tiny standardizer and router -> curation of the characters and of a
few shipped photos -> real pairs from those photos with the tiny standardizer -> two Stage II
(IP-Adapter) steps and one image from the saved adapter -> contact sheets -> inspection.
The stages run on one runner, so on Ray they share its start-up and, where their resource
asks match, its workers."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ray_jobs.jobs import RunOptions


@dataclass
class DemoResult:
    ok: bool
    lines: list[str] = field(default_factory=list)
    summaries: dict = field(default_factory=dict)  # stage -> RunSummary


def run_demo(out: str | Path, options: RunOptions = RunOptions(), characters: int = 8, poses: int = 16,
             resolution: tuple[int, int] = (512, 768), scenes: int = 16, characters_dir: str | None = None,
             overrides: list[str] = ()) -> DemoResult:
    from curate.caption.config import CaptionConfig
    from ray_jobs.captioning import run_caption
    from ray_jobs.pairs import demo_pairs
    from ray_jobs.training import demo_stage2
    from ray_jobs.config import load_config
    from ray_jobs.jobs import (
        run_composite,
        run_render,
        run_router_scenes,
        write_composite_sheet,
        write_contact_sheet,
        write_router_sheet,
    )
    from render.compositing.scenes import NotEnoughSubjects, SceneConfig
    from render.compositing.stage import CompositeJobConfig
    from render.config import RenderConfig
    from shards.inspect import inspect_dataset

    settings = [f"characters.count={characters}", f"poses_per_character={poses}", f"pose_count={max(64, poses)}",
                f"resolution=[{resolution[0]}, {resolution[1]}]", *overrides]
    if characters_dir:
        settings.append(f"characters.source={characters_dir}")
    config = load_config(RenderConfig, "demo", settings)
    composite_config = load_config(CompositeJobConfig, None, [f"seed={config.seed}"])
    scene_config = load_config(SceneConfig, None, [f"seed={config.seed}", f"scenes={max(2, scenes)}"])
    out = Path(out)
    who = config.characters.count if config.characters.source in ("procedural", "human") else "folder of"
    print(f"pairforge demo: {who} characters x {config.poses_per_character} poses at "
          f"{config.resolution[0]}x{config.resolution[1]} -> {out}", flush=True)
    rendered = run_render(config, out, options)
    composited = run_composite(composite_config, out, out / "composited", options)
    summaries = {"render": rendered, "composite": composited}
    try:
        summaries["router"] = run_router_scenes(scene_config, out, out / "router", options)
        scenes_summary = "\n".join(summaries["router"].lines())
    except NotEnoughSubjects as error:
        scenes_summary = f"skipped: {error}"
    caption_config = load_config(CaptionConfig, None, ["backend=metadata"])
    for name in ("composited", "router") if "router" in summaries else ("composited",):
        summaries[f"caption-{name}"] = run_caption(caption_config, out / name, out / "captions" / name, options)
    stopping = None
    if options.runner == "ray":  # the rest needs no Ray: stop it meanwhile
        from ray_jobs.ray_runner import shutdown_in_background
        stopping = shutdown_in_background()
    stage1_lines, checkpoint = demo_stage1(out, options.overwrite)
    router_lines = demo_router(out, options.overwrite) if "router" in summaries else []
    curation_lines = demo_curation(out, Path(characters_dir) if characters_dir else out / "characters")
    pairs_lines, real_pairs = demo_pairs(out, checkpoint, out / "curated" / "photos", options.overwrite)
    stage2_lines = demo_stage2(out / "stage2", out / "real-pairs", options.overwrite) if real_pairs else \
        ["stage2: skipped: no real pair passed the gate"]
    scene_sheet = write_router_sheet(out / "router", out / "router_sheet.png") if "router" in summaries else "none"
    sheet = write_contact_sheet(out / "pairs", out / "contact_sheet.png")
    composite_sheet = write_composite_sheet(out / "pairs", out / "composited", out / "composite_sheet.png")
    report = inspect_dataset(out)
    lines = [*rendered.lines(), "composited: " + "\n".join(composited.lines()), "router scenes: " + scenes_summary,
             f"captions (metadata of the renders): {out / 'captions'} (composited/, router/: the records with txt)",
             f"characters: {out / 'characters'}",
             f"contact sheets: {sheet} (pairs), {composite_sheet} (composites), {scene_sheet} (router scenes)",
             f"configs: {out / 'config.yaml'}, {out / 'composited' / 'config.yaml'}, {out / 'router' / 'config.yaml'}",
             *stage1_lines,
             *router_lines,
             *curation_lines,
             *pairs_lines,
             *stage2_lines,
             f"inspect: {'OK' if report.ok else 'FAILED'} ({report.records} records); run `pairforge inspect {out}`"]
    if stopping is not None:
        stopping.join()
    failed = any(summary.failed for summary in summaries.values())
    return DemoResult(ok=report.ok and not failed, lines=lines, summaries=summaries)


def demo_stage1(out: Path, overwrite: bool = False) -> tuple[list[str], str]:
    """A few Stage I steps of a tiny standardizer (random base, 64x96) on the composites, then a
    standardize pass over their first shard: the whole path in a few seconds, not a useful model.
    Returns the summary lines and the final checkpoint."""
    from ray_jobs.config import load_config
    from ray_jobs.training import run_standardize, run_train_stage1
    from train.models.tiny import build_tiny_base
    from train.standardize import StandardizeConfig
    from train.stage1 import Stage1Config

    base = build_tiny_base(out / "stage1" / "tiny-base")
    config = load_config(Stage1Config, "stage1-tiny", [f"base={base}", f"image_encoder={base / 'image_encoder'}",
                                                       "steps=4", "checkpoint_every=4"])
    result = run_train_stage1(config, str(out / "composited"), out / "stage1", overwrite=overwrite, progress=False)
    standardize = load_config(StandardizeConfig, None, [f"checkpoint={result['final']}", "gpus=0", "device=cpu",
                                                        "steps=4", "guidance_scale=1"])
    summary = run_standardize(standardize, out / "composited", out / "standardized",
                              RunOptions(runner="local", overwrite=overwrite, progress=False), first_shards=1)
    losses = result["losses"]
    loss = f"loss {losses[0]:.3f} -> {losses[-1]:.3f}" if losses else "already trained"
    return [f"stage I (tiny model, {result['step']} steps, {loss}): "
            f"checkpoint {result['final']}, sample grid {result.get('grid', '-')}",
            f"standardized: {summary.done} composites -> {out / 'standardized'}"], str(result["final"])


def demo_router(out: Path, overwrite: bool = False) -> list[str]:
    """A few router steps of a tiny SDXL-shaped model (a random UNet, a VAE fitted to keep the picture;
    64x96) on the router scenes, and the routing-map figure (the paper's Figure 4 layout) of a
    held-out scene: the path, not a useful model."""
    from ray_jobs.config import load_config
    from ray_jobs.training import run_train_router
    from train.models.tiny import build_tiny_router_base
    from train.router import RouterConfig

    base = build_tiny_router_base(out / "router-train" / "tiny-base")
    config = load_config(RouterConfig, "router-tiny", [f"base={base}", f"image_encoder={base / 'image_encoder'}",
                                                       'image_encoder_subfolder=""', "steps=3", "checkpoint_every=3",
                                                       "validation_samples=2"])
    result = run_train_router(config, str(out / "router"), out / "router-train", overwrite=overwrite, progress=False)
    losses = result["losses"]
    loss = f"routing loss {losses[0]['routing']:.3f} -> {losses[-1]['routing']:.3f}" if losses else "already trained"
    return [f"router (tiny model, {result['step']} steps, {loss}): checkpoint {result['final']}, "
            f"routing-map figure {result.get('figure', '-')}"]


def _shipped_photos(folder: Path) -> Path:
    """A handful of the photographs scikit-image ships: one person photo, a smaller re-encoded
    copy of it (a duplicate), a grey photo of a photographer, and two without a person."""
    import skimage.data
    from PIL import Image

    from shards.encoding import encode_jpeg
    folder.mkdir(parents=True, exist_ok=True)
    person = skimage.data.astronaut()
    photos = {"astronaut": (person, 92),
              "astronaut-copy": (np.asarray(Image.fromarray(person).resize((400, 400))), 70),
              "camera": (np.repeat(skimage.data.camera()[..., None], 3, axis=2), 92),
              "coffee": (skimage.data.coffee(), 92), "chelsea": (skimage.data.chelsea(), 92)}
    for name, (image, quality) in photos.items():
        (folder / f"{name}.jpg").write_bytes(encode_jpeg(image, quality))
    return folder


def demo_curation(out: Path, characters: Path) -> list[str]:
    """``curate assets`` over the demo's characters (its ``--characters-dir`` or the generated
    ones) and ``curate photos`` over a few shipped photos, in-process (a few seconds): what was
    kept and rejected, and why."""
    from curate.assets import AssetJobConfig
    from curate.stages import PhotoJobConfig
    from ray_jobs.curation import run_curate_assets, run_curate_photos

    local = RunOptions(runner="local", progress=False)
    lines = []
    for what, summary, report in (
            ("characters", run_curate_assets(AssetJobConfig(), characters, out / "curated" / "assets", local),
             out / "curated" / "assets" / "report.html"),
            ("shipped photos", run_curate_photos(PhotoJobConfig(), str(_shipped_photos(out / "curated" / "photos-in")),
                                                 out / "curated" / "photos", local),
             out / "curated" / "photos" / "report.html")):
        reasons = ", ".join(f"{n} {reason}" for reason, n in summary.reasons.most_common()) or "none"
        lines.append(f"curated {what}: {summary.done} kept, {summary.rejected} rejected ({reasons}); report {report}")
    return lines
