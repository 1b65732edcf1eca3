"""`ray job submit` as README.md's "Running on a Ray cluster" tells it: a head started with the
dashboard and token authentication (on 127.0.0.1, free ports), the token made on the head with
`ray get-auth-token --generate` and handed to the submitter only as RAY_AUTH_TOKEN (the head and
the submitter each have a HOME of their own), the checkout uploaded as the job's working_dir without
.git, .venv, node_modules and outputs. The jobs write the same bytes as a local run, a job stopped
mid-way with `ray job stop` is finished by resubmitting it, and a wrong config fails fast with
pairforge's message in `ray job logs`.

`ray stop` is never run: it stops every Ray process of the machine, other people's clusters
included. The head is the `ray start --head --block` process started here, stopped by SIGTERM (it
drains and stops its own processes). The head's processes are known as that process's descendants
and by a marker they inherit in their environment, so the teardown checks that none outlived it (and
kills any that did, by pid)."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.helpers import ROOT

pytestmark = [pytest.mark.ray, pytest.mark.slow]  # a Ray head and whole jobs: ~60 s in all (default timeout)
BIN = Path(sys.executable).parent
MARKER = "PAIRFORGE_TEST_RAY_HEAD"
# The README's command, with the demo config made small: 8 characters x 64 poses at 128x192, 512
# samples in 64 shards of 8: ~7 s on 2 cores, long enough to be stopped mid-way.
EXCLUDES = '{"excludes": [".git", ".venv", "node_modules", "/out", "*.tar"]}'
SMALL = ["--set", "poses_per_character=64", "--set", "samples_per_shard=8", "--set", "resolution=[128, 192]",
         "--quiet"]
SHARDS, SAMPLES = 64, 512
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # the head is on loopback


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _processes() -> dict[int, tuple[int, str, int]]:
    """pid -> (parent pid, state, start time) of every process, from /proc."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):  # gone meanwhile
                continue
            table[int(entry.name)] = (int(fields[1]), fields[0], int(fields[19]))
    return table


def _head_processes(root: int | None, marker: str) -> set[tuple[int, int]]:
    """(pid, start time) of the head's processes: the descendants of its `ray start` process (GCS,
    raylet, dashboard, agents, workers, job drivers, whatever their process group), and any process
    whose environment still carries the head's marker (setproctitle overwrites some Ray processes'
    environments, and a process whose parent died is no longer a descendant)."""
    table, needle = _processes(), f"{MARKER}={marker}".encode()
    children = {}
    for pid, (parent, _, _) in table.items():
        children.setdefault(parent, []).append(pid)
    found, todo = set(), [root] if root in table else []  # root None: the marker alone
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo.extend(children.get(pid, []))
    for pid in table:
        try:
            if needle in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                found.add(pid)
        except OSError:  # gone, or not ours to read
            pass
    return {(pid, table[pid][2]) for pid in found}


def _alive(processes: set[tuple[int, int]]) -> list[int]:
    """The pids of ``processes`` still running (the same start time: not a reused pid; not a zombie)."""
    table = _processes()
    return sorted(pid for pid, start in processes
                  if pid in table and table[pid][2] == start and table[pid][1] != "Z")


def _clean_env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("RAY_") and k not in (MARKER, "PYTHONPATH")}
    # PATH as `source .venv/bin/activate` leaves it. RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 keeps Ray on
    # loopback: otherwise it swaps 127.0.0.1 for the machine's outward address (e.g. in the
    # RAY_ADDRESS that `ray job submit` gives the entrypoint).
    return {**env, "HOME": str(home), "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


class Head:
    def __init__(self, dashboard: str, submitter_env: dict, temp_dir: Path, gcs_port: int):
        self.dashboard, self.env, self.temp_dir, self.gcs_port = dashboard, submitter_env, temp_dir, gcs_port

    def ray(self, *args, check=True, timeout=300) -> subprocess.CompletedProcess:
        """A `ray` command of the submitter (in the checkout, as a user runs it)."""
        result = subprocess.run([str(BIN / "ray"), *args], capture_output=True, text=True, timeout=timeout,
                                cwd=ROOT, env=self.env)
        if check and result.returncode:
            raise AssertionError(f"ray {' '.join(args)} exited {result.returncode}:\n"
                                 f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result

    def submit(self, submission_id: str, *pairforge_args, wait=True, check=True) -> subprocess.CompletedProcess:
        return self.ray("job", "submit", "--address", self.dashboard, "--submission-id", submission_id,
                        "--working-dir", ".", "--runtime-env-json", EXCLUDES, *([] if wait else ["--no-wait"]),
                        "--", "pairforge", "render", *pairforge_args, "--address", "auto", check=check)

    def api(self, path: str):
        """The dashboard's jobs API (JSON), with the token, as the jobs CLI uses it."""
        request = urllib.request.Request(f"{self.dashboard}{path}",
                                         headers={"Authorization": f"Bearer {self.env['RAY_AUTH_TOKEN']}"})
        with NO_PROXY.open(request, timeout=30) as response:
            return json.loads(response.read())

    def logs(self, submission_id: str) -> str:
        return self.ray("job", "logs", "--address", self.dashboard, submission_id).stdout


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    homes = tmp_path_factory.mktemp("homes")
    head_home, submitter_home = homes / "head", homes / "submitter"
    head_home.mkdir()
    submitter_home.mkdir()
    marker = uuid.uuid4().hex
    head_env = {**_clean_env(head_home), MARKER: marker}
    # On the head: a token once (~/.ray/auth_token), then the head with token auth and the dashboard.
    subprocess.run([str(BIN / "ray"), "get-auth-token", "--generate"], check=True, capture_output=True,
                   timeout=120, env=head_env)
    head_env["RAY_AUTH_MODE"] = "token"
    gcs, dashboard, client, agent = _free_ports(4)
    temp_dir = Path(tempfile.mkdtemp(prefix="pfray-", dir="/tmp"))  # short: Ray's socket paths live here
    log = open(tmp_path_factory.mktemp("head") / "ray-start.log", "w+")
    process = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", f"--port={gcs}", "--node-ip-address=127.0.0.1",
         "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
         f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent}", "--num-cpus=2",
         "--disable-usage-stats", f"--temp-dir={temp_dir}"],
        stdout=log, stderr=subprocess.STDOUT, env=head_env, start_new_session=True)
    try:
        # The submitter gets the token from the head (`ray get-auth-token` there) as RAY_AUTH_TOKEN.
        token = subprocess.run([str(BIN / "ray"), "get-auth-token"], check=True, capture_output=True, text=True,
                               timeout=120, env=head_env).stdout.strip()
        assert len(token) >= 32 and not (submitter_home / ".ray").exists()
        submitter_env = {**_clean_env(submitter_home), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
        url = f"http://127.0.0.1:{dashboard}"
        _wait_for_jobs_api(url, token, process, log)
        yield Head(url, submitter_env, temp_dir, gcs)
    finally:
        head_processes = _head_processes(process.pid, marker)
        process.send_signal(signal.SIGTERM)  # `ray start --block` drains the node and stops its processes
        try:
            process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        deadline = time.monotonic() + 20
        while _alive(head_processes | _head_processes(None, marker)) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = _alive(head_processes | _head_processes(None, marker))
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert len(head_processes) >= 8, head_processes  # the walk found the head: GCS, raylet, dashboard, agents...
    assert not left, f"processes of the head outlived `ray start --block` by 20 s (killed now): {left}"


def _wait_for_jobs_api(url: str, token: str, process: subprocess.Popen, log) -> None:
    """Until the dashboard answers the jobs API with the token; without it, it must refuse."""
    deadline = time.monotonic() + 120
    while True:
        if process.poll() is not None or time.monotonic() > deadline:
            log.seek(0)
            raise AssertionError(f"the head did not start (exit {process.poll()}):\n{log.read()[-5000:]}")
        try:
            request = urllib.request.Request(f"{url}/api/jobs/", headers={"Authorization": f"Bearer {token}"})
            with NO_PROXY.open(request, timeout=5) as response:
                assert json.loads(response.read()) == []
            break
        except urllib.error.HTTPError as error:
            if error.code in (401, 403):
                raise AssertionError(f"the head refused the token from `ray get-auth-token`: {error}") from None
            time.sleep(0.5)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    with pytest.raises(urllib.error.HTTPError) as refused:
        NO_PROXY.open(f"{url}/api/jobs/", timeout=5)
    assert refused.value.code == 401


def pairforge(*args, check=True) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "pairforge"), *args], capture_output=True, text=True, check=check,
                          timeout=600, cwd=ROOT)


def shard_bytes(out: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted((out / "pairs").glob("*.tar"))}


def _wait_for_state(head: Head, submission_id: str, states: tuple, seconds: float) -> dict:
    """The job's details from the jobs API once its status is one of ``states`` (or the deadline passed)."""
    deadline = time.monotonic() + seconds
    while True:
        job = head.api(f"/api/jobs/{submission_id}")
        if job["status"] in states or time.monotonic() > deadline:
            return job
        time.sleep(0.2)


def test_a_submitted_render_stopped_and_resubmitted_writes_the_bytes_of_a_local_run(head, tmp_path):
    config = ["--config", "configs/demo.yaml", *SMALL]  # relative: read from the uploaded working_dir
    pairforge("render", "--out", str(tmp_path / "local"), *config, "--runner", "local")
    local = shard_bytes(tmp_path / "local")
    assert len(local) == SHARDS

    # A job run to the end: `ray job submit` streams its logs until it exits.
    head.submit("pairs-1", "--out", str(tmp_path / "job"), *config)
    assert head.api("/api/jobs/pairs-1")["status"] == "SUCCEEDED"
    logs = head.logs("pairs-1")
    assert f"Connecting to existing Ray cluster at address: 127.0.0.1:{head.gcs_port}" in logs, logs
    assert f"done: {SAMPLES} samples in {SHARDS} shards (0 already complete, skipped) on the ray runner" in logs, logs
    assert f"shards: {tmp_path / 'job' / 'pairs'}" in logs, logs
    inspected = pairforge("inspect", str(tmp_path / "job"), check=False)
    assert inspected.returncode == 0, inspected.stdout + inspected.stderr
    assert shard_bytes(tmp_path / "job") == local
    # What was uploaded: the checkout's code and configs, without .git, .venv, node_modules, outputs.
    packages = [p for p in head.temp_dir.glob("session_*/runtime_resources/working_dir_files/_ray_pkg_*")
                if p.is_dir()]
    assert packages
    for package in packages:
        assert (package / "ray_jobs" / "cli.py").exists() and (package / "configs" / "demo.yaml").exists()
        uploaded = {p.name for p in package.iterdir()}
        assert not uploaded & {".git", ".venv", "node_modules", "out"}, uploaded
        assert not list(package.rglob("*.tar"))

    # A job stopped mid-way: `pairforge status` follows it while it runs and after it was stopped.
    out = tmp_path / "stopped"
    head.submit("pairs-2", "--out", str(out), *config, wait=False)
    deadline = time.monotonic() + 120
    while not list((out / "pairs").glob("shard-*.json")):
        assert time.monotonic() < deadline, head.logs("pairs-2")
        time.sleep(0.05)
    running = pairforge("status", str(out)).stdout
    assert f"/{SHARDS} shards complete" in running and "left:" in running, running
    assert head.api("/api/jobs/pairs-2")["status"] == "RUNNING"  # what status read was a running job's
    head.ray("job", "stop", "--address", head.dashboard, "pairs-2")
    assert _wait_for_state(head, "pairs-2", ("STOPPED",), 30)["status"] == "STOPPED"
    stopped = pairforge("status", str(out)).stdout
    complete = int(stopped.split(f"/{SHARDS} shards complete")[0].rsplit(" ", 1)[-1])
    assert 0 < complete < SHARDS, stopped
    # Resubmitted (the same command, a new submission id): the complete shards are kept.
    head.submit("pairs-3", "--out", str(out), *config)
    logs = head.logs("pairs-3")
    assert f"({complete} already complete, skipped)" in logs, logs
    assert f"{SHARDS}/{SHARDS} shards complete" in pairforge("status", str(out)).stdout
    inspected = pairforge("inspect", str(out), check=False)
    assert inspected.returncode == 0, inspected.stdout + inspected.stderr
    assert shard_bytes(out) == local


def test_a_submitted_job_with_a_wrong_config_fails_fast_with_pairforges_message(head, tmp_path):
    began = time.monotonic()
    result = head.submit("pairs-bad", "--out", str(tmp_path / "bad"), "--config", "configs/demo.yaml",
                         "--set", "pose_cont=3", check=False)
    seconds = time.monotonic() - began
    assert result.returncode != 0, result.stdout
    job = _wait_for_state(head, "pairs-bad", ("FAILED",), 10)
    assert job["status"] == "FAILED", job
    assert seconds < 30 and job["end_time"] - job["start_time"] < 15_000, (seconds, job)  # ms
    logs = head.logs("pairs-bad")
    assert "pairforge render: unknown config key 'pose_cont'; did you mean pose_count?" in logs, logs
    assert not (tmp_path / "bad").exists()  # refused before any work
