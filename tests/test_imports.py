import subprocess
import sys


def test_importing_the_packages_loads_no_heavy_framework():
    code = ("import sys, shards, render, curate, pairs, train, ray_jobs;"
            "import shards.reader, shards.writer, shards.inspect, render.stage, render.procedural, render.characters,"
            " render.backends, render.motions, render.compositing.scenes, render.compositing.composite, render.compositing.stage,"
            " render.compositing.backgrounds, render.bonemap, train.compositing, ray_jobs.cli, ray_jobs.local, ray_jobs.jobs;"
            "print(sorted(m for m in ('bpy', 'torch', 'transformers', 'ray', 'diffusers', 'pyrender') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
