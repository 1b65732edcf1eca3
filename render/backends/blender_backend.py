"""The production renderer: Blender (Cycles, EEVEE or Workbench) in a long-lived worker process
(render.backends.blender_worker), driven from this side with the same SceneSpecs as pyrender.

This side keeps the numpy model of the character (camera framing, the canonical skeleton, the
skinning matrices that pose Blender's bones) and never imports bpy. The worker loads a character
once and renders all of its specs; it is replaced after ``recycle_after`` characters, and when it
crashes or a request passes ``timeout_s`` it is killed, replaced and the character reloaded and
retried, until ``tries`` failures reject the character with the worker's log in the reason."""
from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from render.backends.common import camera_json, character_result, light_pose, pose_and_frame
from render.backends.wire import WorkerGone, WorkerTimeout, receive, send
from render.characters import (
    Character,
    CharacterError,
    PosedCharacter,
    load_character,
    node_skinning,
    shape_key_weights,
)
from render.backends.settings import BlenderSettings
from render.gltf import BINARY_GLTF_SUFFIXES
from render.spec import SceneSpec
from shards.stage import StageUnavailable

START_TIMEOUT_S = 120.0
SCRATCH_PREFIX = "pairforge-blender-"  # then the client's pid: tempdir/pairforge-blender-PID-xxxx
_WORKER_NUMBERS = itertools.count(1)  # log names stay unique across backends in one process


class WorkerFailed(CharacterError):
    """The worker crashed or hung ``tries`` times on one asset: the asset is rejected. The
    message names each failure and its worker log; ``logs`` lists the log files."""

    def __init__(self, message: str, logs: list[str]):
        super().__init__(message)
        self.logs = logs


class BlenderUnavailable(StageUnavailable):
    """Blender does not start or configure on this machine: no asset is to blame."""


def _close_quietly(*fds) -> None:
    for fd in fds:
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass


def _remove_scratch_of_dead_clients() -> None:
    """Scratch folders are removed by the client that made them, but a client killed outright (a
    job's SIGKILL, a watchdog's exit, a Ray actor torn down) leaves its own; the next client on the
    machine removes those whose process is gone."""
    for folder in Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*-*"):
        try:
            os.kill(int(folder.name[len(SCRATCH_PREFIX):].split("-")[0]), 0)
        except ValueError:  # not one of ours
            continue
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except PermissionError:  # alive, another user's
            continue


def _worker_environment() -> dict:
    """EEVEE on Mesa compiles its shaders once per machine when the cache persists (~15 s each time
    otherwise); Mesa uses the folder only if it exists (measured: the first EEVEE render 16 s, then
    4 s with the cache). Best effort: a home that cannot be written to just goes without."""
    env = dict(os.environ)
    if "MESA_SHADER_CACHE_DIR" not in env:
        try:
            cache = Path.home() / ".cache" / "pairforge" / "mesa-shaders"
            cache.mkdir(parents=True, exist_ok=True)
            env["MESA_SHADER_CACHE_DIR"] = str(cache)
        except (OSError, RuntimeError):  # RuntimeError: no home for this user
            pass
    return env


class _Worker:
    """One Blender process with its pipes, scratch folder and log. A request interrupted between
    sending and a complete reply leaves the pipe out of step: ``in_flight`` says so."""

    def __init__(self, log_dir: Path):
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"blender-worker-{os.getpid()}-{next(_WORKER_NUMBERS)}.log"
        self.in_flight = False
        self.process = None
        self.scratch = self.request = self.reply = None
        child_fds: tuple = ()
        try:
            _remove_scratch_of_dead_clients()
            self.scratch = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-"))
            request_read, self.request = os.pipe()
            child_fds += (request_read,)
            self.reply, reply_write = os.pipe()
            child_fds += (reply_write,)
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(
                    [sys.executable, "-m", "render.backends.blender_worker", str(request_read), str(reply_write),
                     str(self.scratch), str(os.getpid())],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    pass_fds=child_fds, cwd=Path(__file__).resolve().parents[2], env=_worker_environment(),
                    start_new_session=True)  # a Ctrl-C meant for the job reaches the worker through us
            _close_quietly(*child_fds)
            child_fds = ()
            receive(self.reply, time.monotonic() + START_TIMEOUT_S)  # the worker's hello: bpy imported
        except BaseException as error:
            _close_quietly(*child_fds)
            code = self.close(kill=True)
            if isinstance(error, (WorkerGone, WorkerTimeout)):
                what = "no hello" if isinstance(error, WorkerTimeout) else f"exit code {code}"
                raise BlenderUnavailable(f"the Blender worker did not start ({what}; log {self.log_path})") \
                    from error
            raise

    def call(self, op: str, timeout_s: float, **args) -> tuple[dict, dict]:
        self.in_flight = True
        send(self.request, {"op": op, "args": args})
        reply = receive(self.reply, time.monotonic() + timeout_s)
        self.in_flight = False
        return reply

    def close(self, kill: bool = False) -> int | None:
        """Stop the process (politely unless ``kill``); returns its exit code."""
        if self.process is not None and self.process.poll() is None and not kill and not self.in_flight:
            try:
                send(self.request, {"op": "quit"})
                self.process.wait(timeout=10)
            except (WorkerGone, subprocess.TimeoutExpired):
                pass
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        code = self.process.wait() if self.process is not None else None
        _close_quietly(self.request, self.reply)
        self.request = self.reply = None
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
        return code


class BlenderBackend:
    name = "blender"

    def __init__(self, settings: BlenderSettings | None = None, log_dir: str | Path | None = None):
        self.settings = settings or BlenderSettings()
        try:
            self.version = metadata.version("bpy")
        except metadata.PackageNotFoundError:
            raise ImportError("the blender backend needs the blender extra: pip install 'pairforge[blender]'") from None
        self.log_dir = Path(log_dir) if log_dir else Path(tempfile.gettempdir()) / "pairforge-blender-logs"
        self.rigs = self.log_dir / "rigs"  # non-glTF rigs exported once for the numpy side
        self._worker: _Worker | None = None
        self._loaded_by_worker = 0
        self._asset: tuple[str, str, str | None] | None = None  # (load op, path, rig export) the worker holds
        self._character: Character | None = None
        self._failed: WorkerFailed | None = None
        self.device = None

    # --- the worker's life ---------------------------------------------------------------------
    def _ensure_worker(self) -> _Worker:
        """A configured worker; one that fails to start or configure is killed, never kept."""
        if self._worker is None:
            worker = _Worker(self.log_dir)
            try:
                s = self.settings
                reply = self._checked(worker.call("configure", START_TIMEOUT_S, engine=s.engine, samples=s.samples,
                                                  denoiser=s.denoiser, denoising_prefilter=s.denoising_prefilter,
                                                  device=s.device), worker)
            except (WorkerGone, WorkerTimeout, RuntimeError) as error:
                worker.close(kill=True)
                raise BlenderUnavailable(f"the Blender worker could not be configured ({error}; "
                                         f"log {worker.log_path})") from error
            except BaseException:
                worker.close(kill=True)
                raise
            self._worker, self.device, self._loaded_by_worker = worker, reply["device"], 0
        return self._worker

    def _drop_worker(self, kill: bool) -> int | None:
        code = None
        if self._worker is not None:
            code = self._worker.close(kill=kill)
            self._worker = None
        return code

    @staticmethod
    def _checked(reply: tuple[dict, dict], worker: _Worker) -> dict:
        """The reply's fields, or the worker's error raised with its log named (Blender's own
        messages about the asset are there)."""
        header, arrays = reply
        if not header.get("ok"):
            error = CharacterError if header.get("asset_error") else RuntimeError
            raise error(f"{header.get('error', 'the Blender worker failed')} (log {worker.log_path})")
        return {**header, **arrays}

    def _request(self, op: str, **args) -> dict:
        """``op`` on the worker holding the current asset; a crashed or hung worker is replaced,
        the asset loaded again and the request retried, ``tries`` times in all. Loads get at least
        START_TIMEOUT_S: a deadline tuned for renders must not starve an importer."""
        if self._failed:
            raise self._failed
        load_timeout = max(self.settings.timeout_s, START_TIMEOUT_S)
        timeout = load_timeout if op.startswith("load_") else self.settings.timeout_s
        problems = []
        for _ in range(self.settings.tries):
            log_path = None
            try:
                worker = self._ensure_worker()
                log_path = worker.log_path
                if not op.startswith("load_") and self._loaded_by_worker == 0:
                    load_op, path, export = self._asset
                    self._checked(worker.call(load_op, load_timeout, **self._load_args(load_op, path, export)), worker)
                    self._loaded_by_worker = 1
                return self._checked(worker.call(op, timeout, **args), worker)
            except BlenderUnavailable as error:
                problems.append((str(error), None))
                continue
            except (WorkerGone, WorkerTimeout) as error:
                code = self._drop_worker(kill=True)
                what = f"hung (no reply in {timeout:g} s)" if isinstance(error, WorkerTimeout) \
                    else f"crashed (exit code {code})"
                problems.append((f"worker {what}, log {log_path}", str(log_path)))
            finally:
                if self._worker is not None and self._worker.in_flight:
                    # Interrupted mid-request (a signal, an interrupt): the pipe is out of step.
                    self._drop_worker(kill=True)
        if all(log is None for _, log in problems):  # it never started: the machine, not the asset
            raise BlenderUnavailable("; ".join(what for what, _ in problems))
        self._failed = WorkerFailed(f"blender {op} failed {len(problems)} times: "
                                    + "; ".join(what for what, _ in problems), [log for _, log in problems])
        raise self._failed

    @staticmethod
    def _load_args(op: str, path: str, export: str | None) -> dict:
        return {"path": path, "export_glb": export} if op == "load_character" else {"path": path}

    def _load(self, op: str, path: Path, export: str | None = None) -> dict:
        """Load an asset into the worker (a fresh worker every ``recycle_after`` assets)."""
        if self._worker is not None and self._loaded_by_worker >= self.settings.recycle_after:
            self._drop_worker(kill=False)
        self._asset, self._failed, self._character = (op, str(path), export), None, None
        reply = self._request(op, **self._load_args(op, str(path), export))
        self._loaded_by_worker += 1
        return reply

    # --- characters ----------------------------------------------------------------------------
    def open_character(self, path: str | Path) -> Character:
        """Import ``path`` (.glb .gltf .vrm .fbx .blend) into the worker; the numpy model is read
        from the file itself when it is binary glTF, else from the rig Blender exports."""
        path = Path(path).resolve()
        export = None
        if path.suffix.lower() not in BINARY_GLTF_SUFFIXES:
            digest = hashlib.sha256(f"{path}:{path.stat().st_mtime_ns if path.exists() else 0}".encode()).hexdigest()
            export = str(self.rigs / f"{path.stem}-{digest[:12]}.glb")
        self._load("load_character", path, export if export and not Path(export).exists() else None)
        character = load_character(export or path)
        character.id, character.path = path.stem, str(path)  # the asset's identity, not the exported rig's
        self._character = character
        return self._character

    def render(self, spec: SceneSpec, with_head_mask: bool = False) -> dict:
        """``spec`` rendered by Blender; keypoints and the face box come from Blender's posed
        bones (and the landmark objects riding on them), projected with the spec's camera."""
        if self._character is None:
            raise RuntimeError("open a character before rendering")
        if with_head_mask:
            raise NotImplementedError("the head mask is a pyrender QA aid; the blender backend does not draw it")
        character = self._character
        posed, _, camera_pose, fpx = pose_and_frame(character, spec)
        named = {**character.joint_nodes, **character.landmark_nodes}
        reply = self._request(
            "render_character", skin={k: v.ravel().tolist() for k, v in node_skinning(character, spec.pose).items()},
            shape_keys=shape_key_weights(character, spec.expression),
            points=sorted({character.node_names[n] for n in named.values()}),
            **self._view_args(camera_pose, fpx, spec.resolution, spec.lights, spec.ambient))
        points = dict(posed.points)
        for point, node in named.items():
            if character.node_names[node] in reply["points"]:
                points[point] = np.asarray(reply["points"][character.node_names[node]])
        blender_posed = PosedCharacter(posed.positions, posed.normals, points)
        return character_result(reply["rgba"], reply["depth"], blender_posed, character, camera_pose, fpx, spec)

    @staticmethod
    def _view_args(camera_pose: np.ndarray, fpx: float, resolution, lights, ambient: float) -> dict:
        lights = [{"pose": light_pose(camera_pose, light).tolist(), "intensity": light.intensity,
                   "colour": list(light.colour)} for light in lights]
        return {"camera": camera_pose.tolist(), "focal_px": float(fpx), "resolution": list(resolution),
                "lights": lights, "ambient": float(ambient)}

    # --- motions (FBX) -----------------------------------------------------------------------------
    def read_motion(self, path: str | Path) -> dict:
        """An animated armature (.fbx) sampled by the worker: ``bones``, ``parents``, ``fps`` and
        arrays ``rest`` (B, 4, 4) and ``world`` (F, B, 4, 4) in pairforge's frame (render.motions
        turns them into canonical poses). CharacterError says why a file cannot be used."""
        return self._load("load_motion", Path(path).resolve())

    # --- static objects (multi-view renders) -----------------------------------------------------
    def open_object(self, path: str | Path) -> tuple[np.ndarray, np.ndarray]:
        """Import a mesh asset; returns its bounding box (min, max) in pairforge's frame."""
        reply = self._load("load_object", Path(path).resolve())
        return np.asarray(reply["min"]), np.asarray(reply["max"])

    def render_view(self, camera_pose: np.ndarray, fpx: float, resolution: tuple[int, int], lights,
                    ambient: float) -> dict:
        """The loaded object from ``camera_pose`` (lights given relative to the camera)."""
        width, height = resolution
        reply = self._request("render_view", **self._view_args(camera_pose, fpx, resolution, lights, ambient))
        rgba = reply["rgba"]
        return {"rgba": rgba, "mask": rgba[..., 3] > 0, "depth": reply["depth"],
                "camera": camera_json(camera_pose, fpx, width, height)}

    @property
    def worker_pid(self) -> int | None:
        return self._worker.process.pid if self._worker else None

    @property
    def log_path(self) -> Path | None:
        return self._worker.log_path if self._worker else None

    def close(self) -> None:
        self._drop_worker(kill=False)

    def __del__(self):
        try:
            self.close()
        except Exception:  # at interpreter exit
            pass
