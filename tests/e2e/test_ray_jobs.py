"""Whole jobs on Ray: same bytes as the local runner, a crashed driver resumed, faults survived,
a cluster joined by address. Each job runs in its own process, as users run them."""
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from shards.inspect import inspect_dataset
from shards.reader import iter_dataset
from tests.helpers import ROOT

pytestmark = [pytest.mark.ray, pytest.mark.slow]  # each test runs whole jobs as processes: 5-80 s
BIN = Path(sys.executable).parent
SMALL = ["--set", "characters.count=3", "--set", "poses_per_character=4", "--set", "samples_per_shard=4",
         "--set", "resolution=[128, 192]", "--quiet"]


def pairforge(*args, check=True, **kwargs):
    return subprocess.run([str(BIN / "pairforge"), *args], capture_output=True, text=True, check=check,
                          timeout=600, cwd=ROOT, **kwargs)


def shard_bytes(out: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted((out / "pairs").glob("*.tar"))}


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    pairforge("render", "--out", str(out), "--runner", "local", *SMALL)
    return out


def test_ray_runner_writes_the_same_bytes_as_the_local_runner(local_run, tmp_path):
    pairforge("render", "--out", str(tmp_path), *SMALL)  # ray is the default runner
    assert len(shard_bytes(local_run)) == 3
    assert shard_bytes(tmp_path) == shard_bytes(local_run)


def test_compositing_on_ray_writes_the_same_bytes_as_locally(local_run, tmp_path):
    pairforge("composite", "--in", str(local_run), "--out", str(tmp_path / "ray"), "--quiet")
    pairforge("composite", "--in", str(local_run), "--out", str(tmp_path / "local"), "--runner", "local", "--quiet")
    ray_shards = {p.name: p.read_bytes() for p in (tmp_path / "ray").glob("*.tar")}
    assert len(ray_shards) == 3
    assert ray_shards == {p.name: p.read_bytes() for p in (tmp_path / "local").glob("*.tar")}
    assert inspect_dataset(tmp_path / "ray").ok


@pytest.mark.timeout(600)  # waits up to 300 s for the first shard, then runs three whole jobs
def test_a_driver_killed_at_a_random_point_resumes_to_the_same_dataset(tmp_path):
    job = ["render", "--out", str(tmp_path / "job"), *SMALL, "--set", "poses_per_character=8",
           "--set", "samples_per_shard=2"]  # 12 shards
    driver = subprocess.Popen([str(BIN / "pairforge"), *job], cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not list((tmp_path / "job" / "pairs").glob("shard-*.json")) and time.monotonic() < deadline:
        time.sleep(0.05)
    delay = random.uniform(0.0, 3.0)  # a random point once the job is under way
    time.sleep(delay)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    status = pairforge("status", str(tmp_path / "job")).stdout
    assert "/12 shards complete" in status, status
    pairforge(*job)
    assert "12/12 shards complete" in pairforge("status", str(tmp_path / "job")).stdout
    report = inspect_dataset(tmp_path / "job" / "pairs")
    assert report.ok and report.records == 24, report.problems  # no duplicates: inspect checks keys
    pairforge(*job[:2], str(tmp_path / "uninterrupted"), *job[3:], "--runner", "local")
    assert shard_bytes(tmp_path / "job") == shard_bytes(tmp_path / "uninterrupted"), f"killed {delay:.2f} s in"


def test_worker_death_failing_and_hanging_samples(local_run, tmp_path):
    local = {r["__key__"]: r for r in iter_dataset(local_run / "pairs", decode=False)}
    keys = sorted(local)
    kill, fail, hang = keys[5], keys[1], keys[10]
    out = subprocess.run([sys.executable, str(ROOT / "tests/e2e/fault_job.py"), str(tmp_path), "--kill", kill,
                          "--fail", fail, "--hang", hang, "--timeout", "3"],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "killed.marker").exists()  # a worker really died mid-shard
    report = inspect_dataset(tmp_path / "pairs")
    assert report.ok, report.problems
    assert report.records == 10 and report.rejects == 2
    reasons = list(report.reject_reasons)
    assert any(fail in r and "ValueError" in r for r in reasons)
    assert any(r.startswith("timeout") for r in reasons)
    written = {r["__key__"]: r for r in iter_dataset(tmp_path / "pairs", decode=False)}
    assert set(written) == set(keys) - {fail, hang}
    for key, record in written.items():  # nothing lost, nothing half-written: the same bytes
        assert record == local[key]
    assert not list((tmp_path / "pairs").glob("*.tmp")) and not (tmp_path / "pairs" / "_watchdog").exists()
    assert list(tmp_path.glob("teardown-*.marker"))  # the surviving worker released its stage at the end


@pytest.mark.timeout(600)  # starts and stops a Ray head (up to 120 s each) around two whole jobs
def test_joining_a_cluster_by_address(local_run, tmp_path):
    # A head on this machine, reached over loopback only (Ray otherwise swaps 127.0.0.1 for the
    # machine's outward address), with Ray's token authentication on both sides (a token is made
    # if this machine has none yet). The head is this test's own `ray start --block` process,
    # stopped by SIGTERM: `ray stop` would stop every Ray of the machine.
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    subprocess.run([str(BIN / "ray"), "get-auth-token", "--generate"], check=True, capture_output=True,
                   timeout=120, env=env)
    env["RAY_AUTH_MODE"] = "token"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    temp_dir = tempfile.mkdtemp(prefix="pfray-", dir="/tmp")  # short: Ray's socket paths live in it
    head = subprocess.Popen([str(BIN / "ray"), "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
                             "--node-ip-address=127.0.0.1", "--include-dashboard=false", "--disable-usage-stats",
                             f"--temp-dir={temp_dir}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    try:
        result = pairforge("render", "--out", str(tmp_path / "joined"), "--address", f"127.0.0.1:{port}", *SMALL,
                           env=env)
        assert "on the ray runner" in result.stdout
        # Without an address a job starts its own embedded Ray, even with a cluster running here.
        result = pairforge("render", "--out", str(tmp_path / "embedded"), *SMALL, env=env)
        assert "on the ray runner" in result.stdout
    finally:
        head.send_signal(signal.SIGTERM)  # `ray start --block` stops the processes it started
        try:
            head.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert shard_bytes(tmp_path / "joined") == shard_bytes(tmp_path / "embedded") == shard_bytes(local_run)
