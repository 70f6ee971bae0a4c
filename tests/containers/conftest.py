"""The compose stack of docker/, built and started once for the container tests (tests/containers),
and their own summary: engine, base images (real or stand-ins), times and sizes.

``stack`` (package scope: torn down after the last test of tests/containers, not at the end of the
whole run): the CPU image built as docker-compose.cpu.yml builds it, then the backend's services
without Label Studio (redis, api, worker, trainer, and the test's picture server): api, worker and
trainer first, Redis later, so startup must not depend on the engine's healthchecks.
test_label_studio_profile.py adds the ``label-studio`` service to the same project. At the end,
``down -v`` must leave no container, pod, network or volume of the project behind (whatever is left
is removed by force, and the teardown fails).
"""

from __future__ import annotations

import subprocess
import time

import cv2
import pytest

from . import smoke_stack as ss


@pytest.fixture(scope="package")
def stack(tmp_path_factory):
    env = ss.tool_env()
    engine = env["DEXTR_CONTAINER_ENGINE"]
    compose = ss.compose_argv(engine, env)
    started = time.monotonic()
    ss.say(f"engine: {engine} ({ss._answers([engine, '--version'], env).stdout.strip()}), compose: {' '.join(compose)}")

    # Base images: present, pulled, or stand-ins.
    t = time.monotonic()
    proc = subprocess.run(
        [str(ss.TOOL), "images", "python", "redis"], capture_output=True, text=True, env=env, timeout=1800
    )
    if proc.returncode != 0:
        ss.unavailable(f"base images: {proc.stderr.strip()[-500:]}")
    for line in proc.stdout.splitlines():
        if line.strip():
            ss.say(f"base image {line}")
    ss.say(f"base images python, redis ready in {time.monotonic() - t:.0f} s")
    # The CPU image, as docker-compose.cpu.yml builds it (tools/container_standins.sh build: the
    # Dockerfile's defaults, or the local mirror where PyTorch's index cannot be reached).
    build = ss.yaml_build()
    before = subprocess.run(
        [engine, "image", "inspect", "--format", "{{.Id}}", ss.IMAGE], capture_output=True, text=True, env=env
    ).stdout.strip()
    t = time.monotonic()
    proc = subprocess.run(
        [str(ss.TOOL), "build", "-t", ss.IMAGE, "-f", build["dockerfile"], "."],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
        cwd=(ss.DOCKER / build["context"]).resolve(),
    )
    assert proc.returncode == 0, f"building {ss.IMAGE} failed:\n{(proc.stdout + proc.stderr)[-4000:]}"
    ss.say(
        f"built {ss.IMAGE} in {time.monotonic() - t:.0f} s"
        + (" (through the local mirror)" if "--network host --build-arg INDEX_URL=" in proc.stderr else "")
    )
    after = subprocess.run(
        [engine, "image", "inspect", "--format", "{{.Id}}", ss.IMAGE], capture_output=True, text=True, env=env
    ).stdout.strip()
    if before and before != after:  # the previous build, now untagged: its own layers go
        subprocess.run([engine, "rmi", before], capture_output=True, env=env, timeout=300)

    workdir = tmp_path_factory.mktemp("compose-smoke")
    s = ss.Stack(engine, compose, env, workdir)
    s.images.mkdir()
    s.images.chmod(0o755)
    s.pictures = ss.pictures()
    for name, image, _ in s.pictures:
        cv2.imwrite(str(s.images / name), image)
        (s.images / name).chmod(0o644)
    ss.write_env_file(s)
    try:
        t = time.monotonic()
        # The backend first, Redis later: startup must not depend on the engine's healthchecks.
        s.up("api", "worker", "trainer", no_deps=True)
        ss.wait_for(
            lambda: (
                all("waiting for Redis" in s.logs(name) for name in ("worker", "trainer"))
                and s.redis_down_answer() is not None
            ),
            120,
            lambda: "\n".join(f"--- {n}:\n{s.logs(n)[-1500:]}" for n in ("api", "worker", "trainer")),
            "worker and trainer log that they wait for Redis; the api answers 503",
        )
        ss.say(f"without Redis: worker and trainer wait for it; /health says {s.redis_down_answer()}")
        s.up(*ss.BACKEND)
        s.health = s.wait_health(300)
        ss.say(
            f"stack up (healthy, 1 worker, 1 trainer) in {time.monotonic() - t:.0f} s; "
            f"{time.monotonic() - started:.0f} s since the start"
        )
        yield s
    finally:
        t = time.monotonic()
        left = s.down()
        ss.say(f"down -v in {time.monotonic() - t:.0f} s; all container tests {time.monotonic() - started:.0f} s")
        assert not left, f"`down -v` left {left} behind (removed by force)"
        assert not s.leftovers(), f"could not remove {s.leftovers()}"


def pytest_terminal_summary(terminalreporter):
    if ss.REPORT:
        terminalreporter.section("containers (tests/containers)")
        for line in ss.REPORT:
            terminalreporter.write_line(line)
