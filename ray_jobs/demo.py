"""``pairforge demo``: the main job on the embedded default, end to end: procedural characters ->
synthetic pairs -> composites on backgrounds -> router scenes -> contact sheets -> inspection.
The three stages run on one runner, so on Ray they share its start-up and, where their resource
asks match, its workers."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ray_jobs.jobs import RunOptions


@dataclass
class DemoResult:
    ok: bool
    lines: list[str] = field(default_factory=list)
    summaries: dict = field(default_factory=dict)  # stage -> RunSummary


def run_demo(out: str | Path, options: RunOptions = RunOptions(), characters: int = 8, poses: int = 16,
             resolution: tuple[int, int] = (512, 768), scenes: int = 16, characters_dir: str | None = None,
             overrides: list[str] = ()) -> DemoResult:
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
    who = config.characters.count if config.characters.source == "procedural" else "folder of"
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
    stopping = None
    if options.runner == "ray":  # the rest needs no Ray: stop it meanwhile
        from ray_jobs.ray_runner import shutdown_in_background
        stopping = shutdown_in_background()
    scene_sheet = write_router_sheet(out / "router", out / "router_sheet.png") if "router" in summaries else "none"
    sheet = write_contact_sheet(out / "pairs", out / "contact_sheet.png")
    composite_sheet = write_composite_sheet(out / "pairs", out / "composited", out / "composite_sheet.png")
    report = inspect_dataset(out)
    lines = [*rendered.lines(), "composited: " + "\n".join(composited.lines()), "router scenes: " + scenes_summary,
             f"characters: {out / 'characters'}",
             f"contact sheets: {sheet} (pairs), {composite_sheet} (composites), {scene_sheet} (router scenes)",
             f"configs: {out / 'config.yaml'}, {out / 'composited' / 'config.yaml'}, {out / 'router' / 'config.yaml'}",
             f"inspect: {'OK' if report.ok else 'FAILED'} ({report.records} records); run `pairforge inspect {out}`"]
    if stopping is not None:
        stopping.join()
    failed = any(summary.failed for summary in summaries.values())
    return DemoResult(ok=report.ok and not failed, lines=lines, summaries=summaries)
