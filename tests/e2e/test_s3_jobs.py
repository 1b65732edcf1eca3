"""The demo's render -> composite jobs with every input and output on s3:// (a moto S3 server on
127.0.0.1, started here): the same bytes as on local disk, a driver killed mid-job resumed to the
same objects, faults injected at the server survived, permanent errors stopped before any work.
Each job runs as its own process, as users run them."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shards import storage
from shards.inspect import inspect_dataset
from tests.helpers import ROOT
from tests.s3server import CREDENTIALS, FaultProxy, Faults, start_moto

pytest.importorskip("s3fs")
pytest.importorskip("moto")
pytestmark = pytest.mark.slow  # whole jobs as processes: 3-20 s each
BIN = Path(sys.executable).parent
SMALL = ["--set", "characters.count=2", "--set", "poses_per_character=3", "--set", "samples_per_shard=2",
         "--set", "resolution=[64, 96]", "--quiet"]  # 3 shards


@pytest.fixture(scope="module")
def server():
    import boto3

    moto, endpoint = start_moto()
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    for bucket in ("local-run", "render", "killed", "faults", "ray-run"):
        client.create_bucket(Bucket=bucket)
    yield endpoint
    moto.stop()


@pytest.fixture
def s3_env(server, monkeypatch):
    """This process and the jobs it starts talk to the server (credentials from the environment)."""
    for key, value in {**CREDENTIALS, "AWS_ENDPOINT_URL": server}.items():
        monkeypatch.setenv(key, value)
    return {**os.environ}


def pairforge(*args, env, check=True):
    result = subprocess.run([str(BIN / "pairforge"), *args], capture_output=True, text=True, timeout=600, cwd=ROOT,
                            env=env)
    if check and result.returncode:
        raise AssertionError(f"pairforge {' '.join(args)} exited {result.returncode}:\n{result.stderr[-3000:]}")
    return result


def objects(prefix: str) -> dict[str, bytes]:
    """Every object under ``prefix`` by its name below it (or every file under a local folder)."""
    return {found[len(prefix):]: storage.read_bytes(found) for found in storage.find(prefix)}


def shards_of(found: dict[str, bytes]) -> dict[str, bytes]:
    return {name: data for name, data in found.items() if name.endswith(".tar")}


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """render -> composite on local disk: the bytes the s3 runs must equal."""
    out = tmp_path_factory.mktemp("local")
    env = {**os.environ}
    pairforge("render", "--out", str(out / "job"), "--runner", "local", *SMALL, env=env)
    pairforge("composite", "--in", str(out / "job"), "--out", str(out / "comp"), "--runner", "local", "--quiet", env=env)
    return out


def test_render_and_composite_on_s3_write_the_bytes_of_a_local_run(s3_env, local_run, tmp_path):
    backgrounds = "s3://render/backgrounds"  # a background folder on s3 too
    from PIL import Image
    for i, color in enumerate([(200, 30, 30), (30, 200, 30)]):
        Image.new("RGB", (80, 120), color).save(tmp_path / f"bg{i}.png")
        storage.put_file(tmp_path / f"bg{i}.png", f"{backgrounds}/bg{i}.png")
    pairforge("render", "--out", "s3://render/job", "--runner", "local", *SMALL, env=s3_env)
    pairforge("composite", "--in", "s3://render/job", "--out", "s3://render/comp", "--runner", "local", "--quiet",
              env=s3_env)
    pairforge("composite", "--in", "s3://render/job", "--out", "s3://render/comp-bg", "--backgrounds", backgrounds,
              "--runner", "local", "--quiet", env=s3_env)
    rendered = objects("s3://render/job/pairs/")
    assert len(shards_of(rendered)) == 3
    assert shards_of(rendered) == shards_of(objects(f"{local_run}/job/pairs/"))
    assert shards_of(objects("s3://render/comp/")) == shards_of(objects(f"{local_run}/comp/"))
    assert not any(name.endswith("tmp") for name in objects("s3://render/"))  # no temporary objects left
    for prefix in ("s3://render/job", "s3://render/comp", "s3://render/comp-bg"):
        report = pairforge("inspect", prefix, env=s3_env).stdout
        assert report.splitlines()[-1] == "OK", report
    assert "3/3 shards complete" in pairforge("status", "s3://render/job", env=s3_env).stdout
    assert inspect_dataset("s3://render/comp-bg").records == 6


@pytest.mark.timeout(600)
def test_a_driver_killed_mid_job_resumes_to_the_same_objects(s3_env, local_run):
    job = ["render", "--out", "s3://killed/job", "--runner", "local", *SMALL]
    driver = subprocess.Popen([str(BIN / "pairforge"), *job], cwd=ROOT, env=s3_env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not storage.glob("s3://killed/job/pairs", "shard-*.json") and time.monotonic() < deadline:
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)  # after the first shard, before the last
    driver.wait()
    status = pairforge("status", "s3://killed/job", env=s3_env).stdout
    assert "/3 shards complete" in status and "3/3" not in status, status
    pairforge(*job, env=s3_env)
    found = objects("s3://killed/job/pairs/")
    assert shards_of(found) == shards_of(objects(f"{local_run}/job/pairs/"))
    assert sorted(found) == sorted(name for name in objects(f"{local_run}/job/pairs/"))  # nothing else, no temporaries
    assert inspect_dataset("s3://killed/job/pairs").ok  # no duplicate keys


def test_faults_at_the_server_are_retried_and_the_output_is_the_same(s3_env, server, local_run):
    faults = Faults(fail_put_every=3, stall_get_every=5, stall_s=1.5)
    proxy = FaultProxy(server, faults)
    env = {**s3_env, "AWS_ENDPOINT_URL": proxy.endpoint}
    try:
        pairforge("render", "--out", "s3://faults/job", "--runner", "local", *SMALL, env=env)
        result = pairforge("composite", "--in", "s3://faults/job", "--out", "s3://faults/comp", "--runner", "local",
                           "--quiet", "--set", "storage.timeout_s=0.5", "--set", "storage.backoff_s=0.05", env=env)
    finally:
        proxy.close()
    assert faults.injected["put 503"] >= 2 and faults.injected["get stall"] >= 1, faults.injected
    assert "transient errors retried" in result.stdout, result.stdout
    assert shards_of(objects("s3://faults/job/pairs/")) == shards_of(objects(f"{local_run}/job/pairs/"))
    assert shards_of(objects("s3://faults/comp/")) == shards_of(objects(f"{local_run}/comp/"))


def test_a_missing_bucket_or_denied_access_stops_before_any_work(s3_env, server):
    result = pairforge("render", "--out", "s3://no-such-bucket/job", "--runner", "local", *SMALL, env=s3_env,
                       check=False)
    assert result.returncode == 2
    assert "s3://no-such-bucket/job: the bucket 'no-such-bucket' does not exist" in result.stderr, result.stderr
    proxy = FaultProxy(server, Faults(deny_bucket="render"))
    try:
        result = pairforge("composite", "--in", "s3://render/job", "--out", "s3://faults/denied", "--runner", "local",
                           "--quiet", env={**s3_env, "AWS_ENDPOINT_URL": proxy.endpoint}, check=False)
    finally:
        proxy.close()
    assert result.returncode == 2 and "s3://render/job: access denied" in result.stderr, result.stderr
    assert "credentials" in result.stderr
    assert not storage.find("s3://faults/denied")  # nothing written


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_a_ray_job_on_s3_writes_the_bytes_of_a_local_run(s3_env, local_run):
    pairforge("render", "--out", "s3://ray-run/job", *SMALL, env=s3_env)  # ray: the default runner
    assert shards_of(objects("s3://ray-run/job/pairs/")) == shards_of(objects(f"{local_run}/job/pairs/"))


def test_bench_storage_measures_s3_against_local_disk_in_one_run():
    result = subprocess.run([str(BIN / "pairforge"), "bench", "storage", "--shards", "2"], capture_output=True,
                            text=True, timeout=300, cwd=ROOT, check=True)
    import json
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    for figure in ("write", "read"):
        assert figures[f"{figure}_s3_mb_s"] > 0 and figures[f"{figure}_local_mb_s"] > 0
        assert figures[f"{figure}_s3_vs_local"] == pytest.approx(
            figures[f"{figure}_s3_mb_s"] / figures[f"{figure}_local_mb_s"], rel=0.05)
    assert figures["reader_s3_records_s"] > 0 and figures["records"] == 32
