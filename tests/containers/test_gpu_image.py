"""docker/Dockerfile.gpu builds and holds what it should (opt-in: ``DEXTR_BUILD_GPU_IMAGE=1``).

It cannot run here (no GPU), and the build downloads about 4 GB of CUDA wheels, so CI does not run
it. It checks that the image holds the same torch release as Dockerfile.cpu's TORCH_VERSION, built
for CUDA, one numpy, no torchvision, an importable backend, and reports its size::

    DEXTR_BUILD_GPU_IMAGE=1 .venv/bin/python -m pytest -q tests/containers/test_gpu_image.py -rs -s
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time

import pytest

from .smoke_stack import DOCKER, REPO, TOOL, say, tool_env

pytestmark = pytest.mark.containers

IMAGE = "dextr-backend:gpu"


@pytest.mark.skipif(
    os.environ.get("DEXTR_BUILD_GPU_IMAGE") != "1",
    reason="set DEXTR_BUILD_GPU_IMAGE=1 to build the GPU image (about 4 GB of CUDA wheels)",
)
def test_gpu_image_builds_with_the_cpu_images_torch():
    env = tool_env()
    engine = env["DEXTR_CONTAINER_ENGINE"]
    images = subprocess.run([str(TOOL), "images", "python"], capture_output=True, text=True, env=env, timeout=1800)
    assert images.returncode == 0, images.stderr
    say(f"GPU image on base {images.stdout.strip()}")
    t = time.monotonic()
    proc = subprocess.run(
        [str(TOOL), "build", "-t", IMAGE, "-f", "docker/Dockerfile.gpu", "."],
        capture_output=True,
        text=True,
        env=env,
        timeout=3600,
        cwd=REPO,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    version = re.search(r"^ARG TORCH_VERSION=(\S+)$", (DOCKER / "Dockerfile.cpu").read_text(), flags=re.M).group(1)
    out = subprocess.run(
        [
            engine,
            "run",
            "--rm",
            "--entrypoint",
            "python3",
            IMAGE,
            "-c",
            "import importlib.metadata as m, json, torch, dextr_backend.labelstudio_api.app; "
            "print(json.dumps({'torch': torch.__version__, 'cuda': torch.version.cuda, "
            "'dists': [d.metadata['Name'].lower() for d in m.distributions()]}))",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["torch"].split("+")[0] == version and found["cuda"], found["torch"]
    assert found["dists"].count("numpy") == 1 and "torchvision" not in found["dists"]
    size = int(
        subprocess.run(
            [engine, "image", "inspect", "--format", "{{.Size}}", IMAGE],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        ).stdout
    )
    say(
        f"{IMAGE}: {size / 1e9:.2f} GB, torch {found['torch']} (CUDA {found['cuda']}), built in "
        f"{time.monotonic() - t:.0f} s"
    )
