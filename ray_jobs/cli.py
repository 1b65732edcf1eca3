"""``pairforge``: one console script, one subcommand per job (docs/architecture.md explains the stages)."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ray_jobs.config import ConfigError
from render.compositing.scenes import NotEnoughSubjects
from shards.stage import StageUnavailable


def _resolution(text: str) -> list[int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: write WIDTHxHEIGHT, e.g. 512x768") from None
    return [w, h]


def _run_options(args):
    from ray_jobs.jobs import RunOptions
    return RunOptions(runner=args.runner, address=args.address, workers=args.workers, overwrite=args.overwrite,
                      progress=not args.quiet)


def _finished(summary) -> int:
    print("\n".join(summary.lines()))
    return 1 if summary.failed else 0


def cmd_demo(args) -> int:
    from ray_jobs.demo import run_demo

    result = run_demo(args.out, _run_options(args), args.characters, args.poses, tuple(args.resolution), args.scenes,
                      args.characters_dir, args.set)
    print("\n".join(result.lines))
    return 0 if result.ok else 1


def cmd_composite(args) -> int:
    from ray_jobs.config import load_config
    from ray_jobs.jobs import run_composite
    from render.compositing.stage import CompositeJobConfig

    overrides = [f"backgrounds={args.backgrounds}", *args.set]
    config = load_config(CompositeJobConfig, args.config, overrides)
    return _finished(run_composite(config, args.input, args.out, _run_options(args)))


def cmd_characters(args) -> int:
    if args.kind == "human":
        from render.human import generate_humans
        paths = generate_humans(args.out, args.count, args.seed)
    else:
        from render.procedural import generate_characters
        paths = generate_characters(args.out, args.count, args.seed, args.scheme, args.rest, args.roll)
    print(f"wrote {len(paths)} characters to {args.out}")
    return 0


def cmd_render(args) -> int:
    from ray_jobs.config import load_config
    from ray_jobs.jobs import run_render
    from render.config import RenderConfig

    config = load_config(RenderConfig, args.config, _backend_overrides(args) + list(args.set))
    return _finished(run_render(config, args.out, _run_options(args)))


def cmd_multiview(args) -> int:
    from ray_jobs.config import load_config
    from ray_jobs.jobs import run_multiview
    from render.multiview import MultiviewConfig

    overrides = [f"objects={Path(args.objects).resolve()}"] + _engine_override(args) + list(args.set)
    config = load_config(MultiviewConfig, args.config, overrides)
    return _finished(run_multiview(config, args.out, _run_options(args)))


def cmd_qa(args) -> int:
    from ray_jobs.qa import run_qa

    overrides = [f"resolution={args.resolution}"] + _engine_override(args) + list(args.set)
    result = run_qa(args.sample, args.out, args.backend, overrides)
    print("\n".join(result["lines"]))
    return 0 if result["ok"] else 1


def cmd_inspect(args) -> int:
    from shards.inspect import inspect_dataset

    report = inspect_dataset(args.dir)
    print("\n".join(report.lines(deep=args.deep)))
    return 0 if report.ok else 1


def cmd_router(args) -> int:
    from ray_jobs.config import load_config
    from ray_jobs.jobs import run_router_scenes
    from render.compositing.scenes import SceneConfig

    config = load_config(SceneConfig, args.config, [f"backgrounds={args.backgrounds}", f"scenes={args.scenes}",
                                                    *args.set])
    return _finished(run_router_scenes(config, args.input, args.out, _run_options(args)))


def cmd_caption(args) -> int:
    from curate.caption.config import CaptionConfig
    from ray_jobs.captioning import run_caption
    from ray_jobs.config import load_config

    overrides = [f"{key}={value}" for key, value in (("model", args.model), ("backend", args.backend)) if value]
    config = load_config(CaptionConfig, args.config, overrides + list(args.set))
    return _finished(run_caption(config, args.input, args.out, _run_options(args)))


CURATE_JOBS = {
    "photos": ("curate.stages", "PhotoJobConfig", "run_curate_photos"),
    "assets": ("curate.assets", "AssetJobConfig", "run_curate_assets"),
    "backgrounds": ("curate.backgrounds", "BackgroundJobConfig", "run_curate_backgrounds"),
}


def cmd_curate(args) -> int:
    import importlib

    from ray_jobs import curation
    from ray_jobs.config import load_config

    module, config_class, job = CURATE_JOBS[args.what]
    config = load_config(getattr(importlib.import_module(module), config_class), args.config, args.set)
    summary = getattr(curation, job)(config, args.input, args.out, _run_options(args))
    print(f"report: {Path(args.out).resolve() / 'report.html'}")
    return _finished(summary)


def cmd_train(args) -> int:
    if args.model_name == "router":
        return cmd_train_router(args)
    if args.model_name == "stage2":
        return cmd_train_stage2(args)
    return cmd_train_stage1(args)


def _launch_training(args, config_class, run) -> dict:
    """``run`` (a ray_jobs.training job) on ``config_class`` from --config and --set, launched as the flags say."""
    from ray_jobs.config import load_config

    config = load_config(config_class, args.config, args.set)
    return run(config, args.data, args.out, args.workers, args.gpus_per_worker, args.cpus_per_worker, args.address,
               args.overwrite, progress=not args.quiet)


def _print_training(result: dict, out, validation: str | None, final_for: str, loss_key: str | None = None,
                    skipped: bool = True) -> None:
    """What every `train` ends with: the steps and the loss (``loss_key`` of each step's named losses;
    with the loader's skipped samples), the held-out ``validation`` line, where the outputs are."""
    losses = [named[loss_key] for named in result["losses"]] if loss_key else result["losses"]
    if losses:
        print(f"trained to step {result['step']} ({result['steps_run']} steps here, {result['samples_per_s']:.2f} "
              f"samples/s on rank 0); {loss_key + ' ' if loss_key else ''}loss {losses[0]:.4f} -> {losses[-1]:.4f}"
              + (f"; {result['problems']} samples skipped by the loader" if skipped else ""))
    else:
        print(f"already at step {result['step']}")
    if validation:
        print(validation)
    print(f"checkpoint: {result.get('checkpoint', '-')}; {final_for}: {result['final']}; "
          f"TensorBoard: tensorboard --logdir {Path(out) / 'logs'}")


def cmd_train_stage1(args) -> int:
    from ray_jobs.training import run_train_stage1
    from train.stage1 import Stage1Config

    result = _launch_training(args, Stage1Config, run_train_stage1)
    _print_training(result, args.out, f"validation on held-out characters: PSNR {result['psnr']:.2f} dB, SSIM "
                    f"{result['ssim']:.4f}; samples: {result['grid']}" if "psnr" in result else None,
                    "for standardize", skipped=False)
    return 0


def cmd_train_router(args) -> int:
    from ray_jobs.training import run_train_router
    from train.router import RouterConfig

    result = _launch_training(args, RouterConfig, run_train_router)
    _print_training(result, args.out, f"held-out segmentation: mean IoU {result['iou']:.3f} (layout-blind baseline "
                    f"{result['iou_layout_blind']:.3f}; with each scene's references rotated "
                    f"{result['iou_references_rotated']:.3f}); routing maps: {result['figure']}" if "iou" in result else None,
                    "for segment", loss_key="routing")
    return 0


def cmd_train_stage2(args) -> int:
    from ray_jobs.training import run_train_stage2
    from train.stage2 import Stage2Config

    result = _launch_training(args, Stage2Config, run_train_stage2)
    _print_training(result, args.out, f"held-out pairs (reference | generated | target): {result['grid']}"
                    if "grid" in result else None, "adapter for load_ip_adapter / eval stage2")
    return 0


def cmd_eval(args) -> int:
    from ray_jobs.config import load_config
    from ray_jobs.training import run_eval_stage2
    from train.evaluate import EvalConfig

    config = load_config(EvalConfig, args.config, args.set)
    run_eval_stage2(config, args.adapter, args.prompts, args.out, args.references)
    print((Path(args.out) / "metrics.md").read_text(), end="")
    print(f"table: {Path(args.out) / 'metrics.json'} (and .csv, .md); grid: {Path(args.out) / 'grid.png'}")
    return 0


def cmd_segment(args) -> int:
    from train.models.router import CheckpointError
    from train.segment import segment

    try:
        paths = segment(args.router, args.image, args.subjects, args.out, device=args.device, timestep=args.timestep,
                        overrides=args.set)
    except (CheckpointError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print("\n".join(paths))
    return 0


def cmd_standardize(args) -> int:
    from ray_jobs.config import load_config
    from ray_jobs.training import run_standardize
    from train.standardize import StandardizeConfig

    config = load_config(StandardizeConfig, args.config, [f"checkpoint={args.checkpoint}", *args.set])
    return _finished(run_standardize(config, args.input, args.out, _run_options(args)))


def cmd_pairs(args) -> int:
    from pairs.build import PairsConfig
    from ray_jobs.config import load_config
    from ray_jobs.pairs import run_pairs

    config = load_config(PairsConfig, args.config, [f"standardize.checkpoint={args.checkpoint}", *args.set])
    return _finished(run_pairs(config, args.photos, args.out, _run_options(args)))


def cmd_poses(args) -> int:
    from collections import Counter

    from render.motions import (
        coverage_plot,
        load_motions,
        motion_manifest,
        pose_library,
        write_pose_table,
    )

    motions, rejects = load_motions(args.motions, keep_root=args.root_motion == "keep")
    if not motions:
        raise FileNotFoundError(f"--motions {' '.join(map(str, args.motions))}: no usable motions "
                                f"({'; '.join(rejects) or 'no motion files'})")
    rows, report = pose_library(motions, target=args.target, every=args.every, threshold=args.threshold)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    table = write_pose_table(rows, args.out)
    plot = coverage_plot(rows, Path(args.out).with_suffix(".png"))
    library = Path(args.out).with_suffix(".motions.json")
    manifest = motion_manifest(motions, rows)
    library.write_text(json.dumps({**manifest, "sampling": report, "rejects": rejects}, indent=1))
    frames = sum(len(m.poses) for m in motions)
    print(f"{len(rows)} unique poses from {frames} frames of {len(motions)} motions -> {table}")
    counts = Counter(r["motion"] for r in rows)
    for motion in motions:
        print(f"  {motion.name}: {counts.get(motion.name, 0)} of {len(motion.poses)} frames ({motion.source})")
    if args.target:
        print(f"target {args.target}: {'reached' if report['reached'] else 'NOT reached'} "
              f"({report['found']} unique poses found, sampled at {report['substeps']} sub-frame(s) per frame)")
        if not report["reached"]:
            print(f"  {report['reason']}")
    for reason in rejects:
        print(f"  rejected: {reason}")
    print(f"coverage plot: {plot}")
    print(f"motion library: {library}")
    return 0


def cmd_status(args) -> int:
    from ray_jobs.status import job_status

    print("\n".join(job_status(args.dir)))
    return 0


def cmd_plan_pairs(args) -> int:
    from pairs.build import PairsConfig
    from ray_jobs.config import load_config
    from ray_jobs.plan import plan_pairs

    config = load_config(PairsConfig, args.config, args.set)
    figures = plan_pairs(config, args.pilot, args.gpus, args.nodes, args.cores_per_node, args.photos)
    for note in figures["stand_ins"]:
        print(f"stand-in: {note}")
    unit = "GPU" if "gpu_hours" in figures else "core"
    per_pair = figures["gpu_seconds_per_pair"] if unit == "GPU" else figures["core_seconds_per_pair"]
    print(f"pilot: {figures['pilot_pairs']} photos in {figures['pilot_wall_s']} s on {figures['device']} "
          f"(+{figures['pilot_setup_s']} s loading): {per_pair} {unit}-s and {figures['bytes_per_pair'] / 1e3:.0f} kB "
          f"per pair; {figures['pilot_rejected']} rejected, {figures['pilot_gate_failed']} would fail the gate")
    phases = ", ".join(f"{phase} {t} s" for phase, t in figures["seconds_per_pair_by_phase"].items())
    print(f"per pair by phase (wall): {phases}")
    where = f"{args.gpus} GPUs" if unit == "GPU" else f"{args.nodes} nodes x {args.cores_per_node} cores"
    hours = figures["gpu_hours"] if unit == "GPU" else figures["core_hours"]
    print(f"projected for {figures['pairs']:,} pairs: {hours:,} {unit}-hours; {figures['wall_hours']:,} h on {where}; "
          f"{figures['storage_tb']} TB of shards")
    print(f"assumes: {figures['assumes']}")
    print(json.dumps(figures))
    return 0


def cmd_plan(args) -> int:
    from ray_jobs.config import load_config
    from ray_jobs.plan import is_pairs_config, plan
    from render.config import RenderConfig

    if is_pairs_config(args.config):
        return cmd_plan_pairs(args)
    config = load_config(RenderConfig, args.config, args.set)
    figures = plan(config, args.pilot, args.nodes, args.cores_per_node)
    print(f"pilot: {figures['pilot_samples']} samples in {figures['pilot_wall_s']} s "
          f"({figures['core_seconds_per_sample']} core-s and {figures['bytes_per_sample'] / 1e3:.0f} kB each)")
    print(f"job: {figures['samples']:,} samples in {figures['shards']:,} shards from {figures['characters']:,} characters")
    print(f"projected: {figures['core_hours']:,} core-hours; {figures['wall_hours']:,} h on {args.nodes} nodes x "
          f"{args.cores_per_node} cores; {figures['storage_tb']} TB of shards")
    print(json.dumps(figures))
    return 0


def cmd_bench(args) -> int:
    from ray_jobs.bench import bench_ray, bench_render

    if args.what == "composite":
        from ray_jobs.bench import bench_composite
        figures = bench_composite(resolution=args.resolution)
    elif args.what == "caption":
        from ray_jobs.bench import bench_caption
        figures = bench_caption(images=args.images, batch_size=args.batch_size, resolution=args.resolution,
                                model=args.model)
    elif args.what == "storage":
        from ray_jobs.bench import bench_storage
        figures = bench_storage(shards=args.shards, endpoint=args.endpoint)
    elif args.what == "loader":
        from ray_jobs.bench_loader import bench_loader
        figures = bench_loader(resolution=args.resolution)
    elif args.what == "curate":
        from ray_jobs.bench_curate import bench_curate
        figures = bench_curate(photos=args.images)
    elif args.what == "train" and args.model_name == "router":
        from ray_jobs.bench_train import bench_train_router
        figures = bench_train_router()
    elif args.what == "train" and args.model_name == "stage2":
        from ray_jobs.bench_train import bench_train_stage2
        figures = bench_train_stage2()
    elif args.what == "train":
        from ray_jobs.bench_train import bench_train_stage1
        figures = bench_train_stage1()
    elif args.what == "ray":
        figures = bench_ray(characters=args.characters, poses=args.poses, resolution=args.resolution)
    else:
        figures = bench_render(characters=args.characters, poses=args.poses, resolution=args.resolution,
                               naive_samples=args.naive_samples, backend=args.backend or "pyrender",
                               engine=ENGINES[args.engine] if args.engine else None,
                               characters_kind=args.characters_kind)
    print(json.dumps(figures))
    return 0


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runner", choices=("ray", "local"), default="ray",
                        help="ray (default: an embedded local Ray unless --address) or local (in-process)")
    parser.add_argument("--address", help="a Ray cluster to join: auto, ray://HOST:PORT or HOST:PORT")
    parser.add_argument("--workers", type=int, help="Ray workers (default: as the cluster's CPUs allow)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an output written with another config instead of refusing")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


ENGINES = {"cycles": "CYCLES", "eevee": "BLENDER_EEVEE", "workbench": "BLENDER_WORKBENCH"}


def _add_backend_options(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    parser.add_argument("--backend", choices=("pyrender", "blender"), default=default,
                        help="renderer (default: the config's; pyrender for the bundled configs)")
    parser.add_argument("--engine", choices=tuple(ENGINES),
                        help="Blender engine, short for --set blender.engine=... (default: cycles)")


def _engine_override(args) -> list[str]:
    return [f"blender.engine={ENGINES[args.engine]}"] if args.engine else []


def _backend_overrides(args) -> list[str]:
    return ([f"backend={args.backend}"] if args.backend else []) + _engine_override(args)


def _add_pairs_stage_options(parser: argparse.ArgumentParser) -> None:
    """Options of the stages that read a render job's pairs and place them on backgrounds."""
    parser.add_argument("--in", dest="input", required=True, help="a render job's --out (or its pairs/ folder)")
    parser.add_argument("--backgrounds", default="procedural", help="a folder of images, or 'procedural' (default)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--config", help="YAML with the stage's settings")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    _add_run_options(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pairforge", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="the main job on the embedded default: characters -> pairs -> shards")
    demo.add_argument("--out", required=True, help="output folder")
    demo.add_argument("--characters", type=int, default=8, help="procedural characters (default 8)")
    demo.add_argument("--poses", type=int, default=16, help="poses per character (default 16)")
    demo.add_argument("--resolution", type=_resolution, default=[512, 768], help="WIDTHxHEIGHT (default 512x768)")
    demo.add_argument("--characters-dir", help="render the .glb characters of this folder instead")
    demo.add_argument("--scenes", type=int, default=16, help="multi-subject router scenes (default 16)")
    demo.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    _add_run_options(demo)
    demo.set_defaults(run=cmd_demo)

    chars = sub.add_parser("characters", help="write procedural rigged characters as .glb")
    chars.add_argument("--out", required=True)
    chars.add_argument("--kind", default="procedural", choices=("procedural", "human"),
                       help="capsule figures (default), or MakeHuman bodies with their own rigs (needs the human "
                            "extra; --scheme, --rest and --roll apply to procedural ones)")
    chars.add_argument("--count", type=int, default=8)
    chars.add_argument("--seed", type=int, default=0)
    chars.add_argument("--scheme", default="canonical",
                       choices=("canonical", "mixamo", "vroid", "rigify", "unreal", "smpl"), help="bone names")
    chars.add_argument("--rest", default="T", choices=("T", "A"), help="the rig's rest pose")
    chars.add_argument("--roll", type=float, default=0.0, help="random bone rolls up to this many degrees")
    chars.set_defaults(run=cmd_characters)

    render = sub.add_parser("render", help="render synthetic pairs from a config")
    render.add_argument("--config", default="demo", help="YAML file, or a bundled config name (default: demo)")
    render.add_argument("--out", required=True)
    _add_backend_options(render)
    render.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    _add_run_options(render)
    render.set_defaults(run=cmd_render)

    multiview = sub.add_parser("multiview", help="mesh assets -> 7 views on a ring each -> multiview shards (Blender)")
    multiview.add_argument("--objects", required=True, help="a folder of .glb/.gltf/.obj/.ply/.stl/.fbx/.blend meshes")
    multiview.add_argument("--out", required=True)
    multiview.add_argument("--config", help="YAML with the multiview settings")
    multiview.add_argument("--engine", choices=tuple(ENGINES), help="Blender engine (default: cycles)")
    multiview.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    _add_run_options(multiview)
    multiview.set_defaults(run=cmd_multiview)

    qa = sub.add_parser("qa", help="render N seeded samples, check the invariants, write a contact sheet and an "
                                   "HTML report; non-zero exit if any invariant fails")
    qa.add_argument("--sample", type=int, default=8, help="samples per backend (default 8)")
    qa.add_argument("--out", required=True)
    qa.add_argument("--backend", choices=("pyrender", "blender", "both"), default="pyrender")
    qa.add_argument("--engine", choices=tuple(ENGINES), help="Blender engine (default: cycles)")
    qa.add_argument("--resolution", type=_resolution, default=[512, 768], help="WIDTHxHEIGHT (default 512x768)")
    qa.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="render config override")
    qa.set_defaults(run=cmd_qa)

    comp = sub.add_parser("composite", help="place synthetic pairs on backgrounds -> composited_pair shards")
    _add_pairs_stage_options(comp)
    comp.set_defaults(run=cmd_composite)

    router = sub.add_parser("router", help="multi-subject scenes with instance masks -> router_sample shards")
    _add_pairs_stage_options(router)
    router.add_argument("--scenes", type=int, default=64)
    router.set_defaults(run=cmd_router)

    caption = sub.add_parser("caption", help="caption shards (Qwen2-VL, vLLM, or metadata of renders) -> the same "
                                             "records with txt, or sidecar caption shards")
    caption.add_argument("--in", dest="input", required=True, help="a folder of shards of one kind")
    caption.add_argument("--out", required=True)
    caption.add_argument("--model", help="a hub id (Qwen/Qwen2-VL-2B-Instruct) or a local folder; "
                                         "without one, captions come from the renders' metadata")
    caption.add_argument("--backend", choices=("transformers", "vllm", "metadata"),
                         help="default: transformers with --model, else metadata")
    caption.add_argument("--config", help="YAML with the caption settings (e.g. configs/caption.yaml)")
    caption.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    _add_run_options(caption)
    caption.set_defaults(run=cmd_caption)

    curate = sub.add_parser("curate", help="curate characters, photos or backgrounds: every input kept or rejected "
                                           "with a reason, an HTML report with thumbnails per reason")
    curate.add_argument("what", choices=tuple(CURATE_JOBS),
                        help="assets: .glb/.vrm characters -> kept list for render; photos: a folder, shards or a "
                             "csv/jsonl/txt/parquet list -> photo shards; backgrounds: a folder -> kept folder")
    curate.add_argument("--in", dest="input", required=True)
    curate.add_argument("--out", required=True)
    curate.add_argument("--config", help="YAML (e.g. configs/curate-photos.yaml); every threshold is a key")
    curate.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    _add_run_options(curate)
    curate.set_defaults(run=cmd_curate)

    train = sub.add_parser("train", help="train a model on shards: stage1 (the standardizer), stage2 (the IP-Adapter "
                                         "personalizer on SDXL) or router (AnyStory's router); one process, or Ray "
                                         "Train DDP with --workers")
    train.add_argument("model_name", choices=("stage1", "stage2", "router"))
    train.add_argument("--data", required=True, help="stage1: synthetic_pair or composited_pair shards; stage2: "
                                                     "real_pair shards (pairforge pairs); router: router_sample "
                                                     "shards; a folder, glob or brace pattern")
    train.add_argument("--out", required=True, help="checkpoints/, final/, samples/ or figures/, logs/ (TensorBoard)")
    train.add_argument("--config", help="YAML (configs/stage1.yaml, stage2.yaml, router.yaml: the papers' scale)")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    train.add_argument("--workers", type=int, default=1, help="DDP ranks under Ray Train (default 1: in-process)")
    train.add_argument("--gpus-per-worker", type=float, default=0.0)
    train.add_argument("--cpus-per-worker", type=float, default=1.0)
    train.add_argument("--address", help="a Ray cluster to join (implies Ray Train)")
    train.add_argument("--overwrite", action="store_true", help="start over in an --out written with another config")
    train.add_argument("--quiet", action="store_true")
    train.set_defaults(run=cmd_train)

    segment = sub.add_parser("segment", help="reference-prompted segmentation with a trained router: one mask per "
                                             "subject image (OUT/mask-<i>.png)")
    segment.add_argument("--router", required=True, help="a folder from train router (OUT/final or a step)")
    segment.add_argument("--image", required=True)
    segment.add_argument("--subjects", nargs="+", required=True, help="segmented subject images (1 to 4)")
    segment.add_argument("--out", required=True)
    segment.add_argument("--timestep", type=int, help="noise level of the maps (default: the checkpoint's)")
    segment.add_argument("--device", help="default: cuda if available, else cpu")
    segment.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                         help="where the checkpoint's frozen parts are now: base=DIR, image_encoder=DIR")
    segment.set_defaults(run=cmd_segment)

    standardize = sub.add_parser("standardize", help="run a trained standardizer over pairs -> standardized shards")
    standardize.add_argument("--checkpoint", required=True, help="a folder from train stage1 (OUT/final or a step)")
    standardize.add_argument("--in", dest="input", required=True, help="composited_pair or synthetic_pair shards")
    standardize.add_argument("--out", required=True)
    standardize.add_argument("--config", help="YAML with the standardize settings (train/standardize.py)")
    standardize.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    _add_run_options(standardize)
    standardize.set_defaults(run=cmd_standardize)

    pairs = sub.add_parser("pairs", help="standardize curated photos -> real pairs (reference, photo, caption), gated")
    pairs.add_argument("--photos", required=True, help="curated photo shards (the --out of `curate photos`)")
    pairs.add_argument("--checkpoint", required=True, help="a standardizer folder from train stage1 (OUT/final)")
    pairs.add_argument("--out", required=True)
    pairs.add_argument("--config", help="YAML with the pairs settings (configs/pairs-300k.yaml, pairs/build.py)")
    pairs.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    _add_run_options(pairs)
    pairs.set_defaults(run=cmd_pairs)

    poses = sub.add_parser("poses", help="unique poses from motions -> a pose table (jsonl) and a coverage plot")
    poses.add_argument("--motions", nargs="+", default=["builtin"],
                       help="motion folders (.bvh .fbx .glb .vrma; FBX needs the blender extra) and/or 'builtin' "
                            "for the built-in clips (default builtin)")
    poses.add_argument("--out", required=True, help="the pose table, e.g. poses.jsonl (the plot goes beside it)")
    poses.add_argument("--every", type=int, default=1, help="sample every Nth frame")
    poses.add_argument("--threshold", type=float, default=0.015,
                       help="drop poses within this mean joint distance (in body heights) of a kept one")
    poses.add_argument("--target", type=int, default=0,
                       help="pose count to reach: short clips are sampled between frames until it is reached "
                            "(or the motions give no more); a larger library keeps an even spread of this many")
    poses.add_argument("--root-motion", choices=("drop", "keep"), default="drop",
                       help="the hips' translation: dropped (default) or kept as each row's 'root'; poses are "
                            "root-relative either way")
    poses.set_defaults(run=cmd_poses)

    status = sub.add_parser("status", help="how far a job is, from its manifests (running, finished or dead)")
    status.add_argument("dir", help="the job's --out folder")
    status.set_defaults(run=cmd_status)

    inspect = sub.add_parser("inspect", help="validate shards against schema and manifest; non-zero on any problem")
    inspect.add_argument("dir")
    inspect.add_argument("--deep", action="store_true",
                         help="also per joint: the visible share of the records with it in frame")
    inspect.set_defaults(run=cmd_inspect)

    plan = sub.add_parser("plan", help="pilot run -> projected core-hours, wall time and storage of a config")
    plan.add_argument("--config", default="demo")
    plan.add_argument("--pilot", type=int, default=64, help="samples (renders, or photos for a pairs config) to run for real (default 64)")
    plan.add_argument("--nodes", type=int, default=10)
    plan.add_argument("--cores-per-node", type=int, default=32)
    plan.add_argument("--gpus", type=int, default=64, help="pairs configs: GPUs to project the wall time on")
    plan.add_argument("--photos", help="pairs configs: curated photos for the pilot (default: the demo's shipped photos)")
    plan.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    plan.set_defaults(run=cmd_plan)

    evaluate = sub.add_parser("eval", help="evaluate a trained model: stage2 (the adapter: CLIP-I with backgrounds "
                                           "removed, CLIP-T, AP-CLIP-I across prompts; a table and an image grid)")
    evaluate.add_argument("model_name", choices=("stage2",))
    evaluate.add_argument("--adapter", required=True, help="a folder from train stage2 (OUT/final or a step)")
    evaluate.add_argument("--prompts", required=True, help="a text file, one prompt a line")
    evaluate.add_argument("--references", help="real_pair shards (their split=test references) or a folder of "
                                               "images; default: the test pairs the adapter was trained on")
    evaluate.add_argument("--out", required=True, help="metrics.json/.csv/.md, grid.png, images/")
    evaluate.add_argument("--config", help="YAML with the eval settings (train/evaluate.py EvalConfig)")
    evaluate.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    evaluate.set_defaults(run=cmd_eval)

    bench = sub.add_parser("bench", help="benchmarks; the last line is one JSON object of figures")
    bench.add_argument("what", choices=("render", "ray", "composite", "caption", "storage", "loader", "train", "curate"),
                       help="render: pairs/s against a naive loop; ray: embedded Ray against the local runner; "
                            "composite: composites/s on one core against a naive PIL pipeline; caption: "
                            "captions/s batched against one image per call (a tiny Qwen2-VL unless --model); "
                            "storage: shard write/read MB/s and reader records/s on S3 against local disk; "
                            "loader: training samples/s per core for every record kind against plain webdataset; "
                            "train stage1: Stage I samples/s of the tiny model at 128x192 fed by the loader against "
                            "the same batches pre-loaded in memory; train router: the same for the tiny router "
                            "at 64x96; train stage2: the same for the tiny IP-Adapter at 64x96 with 2 aspect buckets")
    bench.add_argument("model_name", nargs="?", choices=("stage1", "stage2", "router"), default="stage1",
                       help="train: the model")
    bench.add_argument("--shards", type=int, default=8, help="storage: shards of ~11 MB to write and read (default 8)")
    bench.add_argument("--endpoint", help="storage: an S3-compatible server (default: moto started on 127.0.0.1)")
    bench.add_argument("--characters", type=int, default=8)
    bench.add_argument("--poses", type=int, default=16)
    bench.add_argument("--resolution", type=_resolution, default=[512, 768])
    bench.add_argument("--naive-samples", type=int, default=24, help="samples for the naive baseline loop")
    bench.add_argument("--characters-kind", default="procedural", choices=("procedural", "human"),
                       help="render: the generated characters to render (default procedural)")
    bench.add_argument("--images", type=int, default=32, help="caption: images captioned per batch size; curate: photos through each pipeline")
    bench.add_argument("--batch-size", type=int, default=8, help="caption: images per generate call")
    bench.add_argument("--model", help="caption: a Qwen2-VL hub id or folder instead of the tiny model")
    _add_backend_options(bench)
    bench.set_defaults(run=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "quiet", False):  # the Hugging Face libraries' own bars (weights loaded, shards written)
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        return args.run(args)
    except (ConfigError, FileNotFoundError, RuntimeError, NotEnoughSubjects, StageUnavailable) as error:
        print(f"pairforge {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
