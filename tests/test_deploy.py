"""deploy/: the Ray cluster launcher YAML passes Ray's own config validator, the KubeRay RayJob has a
CPU render pool and a GPU pool, and every entry point they run parses with pairforge's command
line and names a config that exists; no credentials are written in any of them."""
import shlex

import pytest
import yaml

from ray_jobs.cli import build_parser
from ray_jobs.config import CONFIG_DIR
from tests.helpers import ROOT

DEPLOY = ROOT / "deploy"
SECRET_KEYS = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "GOOGLE_APPLICATION_CREDENTIALS", "aws_secret")


def load(name: str) -> dict:
    return yaml.safe_load((DEPLOY / name).read_text())


def commands(entrypoint: str) -> list[list[str]]:
    """The pairforge commands of a shell entry point (`a && b && c`), each parsed by the real CLI."""
    out = []
    for part in entrypoint.split("&&"):
        argv = shlex.split(part)
        assert argv[0] == "pairforge", f"entry point {part.strip()!r} is not a pairforge command"
        args = build_parser().parse_args(argv[1:])  # SystemExit (a failed test) on any unknown option
        config = getattr(args, "config", None)
        if config:
            assert (CONFIG_DIR / f"{config}.yaml").exists() or (ROOT / config).exists(), f"no config {config!r}"
        out.append(argv)
    return out


def test_the_cluster_launcher_yaml_passes_rays_validator():
    pytest.importorskip("ray")
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = load("cluster.yaml")
    validate_config(prepare_config(config))  # as `ray up` does: the provider's defaults, then Ray's JSON schema
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    assert any(t["resources"].get("GPU", 0) >= 1 for t in types.values()), "a GPU pool"
    assert any(t["resources"].get("CPU", 0) >= 8 and not t["resources"].get("GPU") for t in types.values()), \
        "a CPU render pool"
    assert any("pairforge[" in c and "s3" in c for c in config["setup_commands"]), "installs the s3 extra"


def test_the_rayjob_has_a_cpu_render_pool_a_gpu_pool_and_real_entry_points():
    job = load("rayjob.yaml")
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    spec = job["spec"]
    pools = {g["groupName"]: g["template"]["spec"]["containers"][0]["resources"] for g in
             spec["rayClusterSpec"]["workerGroupSpecs"]}
    assert "nvidia.com/gpu" in pools["gpu"]["limits"] and "nvidia.com/gpu" not in pools["cpu-render"]["limits"]
    ran = commands(spec["entrypoint"])
    assert [argv[1] for argv in ran] == ["render", "composite", "caption"]
    assert all(arg.startswith("s3://") for argv in ran for flag, arg in zip(argv, argv[1:]) if flag in ("--in", "--out"))
    yaml.safe_load(spec["runtimeEnvYAML"])


def test_the_runtime_env_and_the_readme_example_submit_real_commands():
    env = load("runtime_env.yaml")
    assert env["working_dir"] == "." and "env_vars" in env
    readme = (ROOT / "README.md").read_text()
    submits = [line.split(" -- ", 1)[1] for line in readme.splitlines()
               if line.startswith("ray job submit") and "deploy/runtime_env.yaml" in line]
    assert submits, "README shows a ray job submit with deploy/runtime_env.yaml"
    for entry in submits:
        commands(entry)


@pytest.mark.parametrize("name", ["cluster.yaml", "rayjob.yaml", "runtime_env.yaml"])
def test_no_credentials_are_written_in_deploy_files(name):
    text = (DEPLOY / name).read_text()
    assert not any(key in text for key in SECRET_KEYS), f"{name} names a credential; use the environment instead"
