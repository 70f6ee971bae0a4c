"""Shared by the container tests (tests/containers): the engine, the compose tool, one compose
project of docker/ with the test's additions, HTTP helpers and the test pictures.

Engine: ``DEXTR_CONTAINER_ENGINE=docker|podman``, else whichever can run containers (Podman first).
Compose: ``docker compose`` (2.24.4 or later, for ``!reset``) or ``podman-compose`` (1.3 or later).
Base images (python:3.11-slim, redis:7.4-alpine, heartexlabs/label-studio:1.23.2): the real ones
where the engine has them or can pull them, else stand-ins built by ``tools/container_standins.sh``;
the run's summary says which.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
from labelstudio_server import SMART_KEYPOINTS_CONFIG
from services import poll

from dextr_backend.geometry import extreme_points
from dextr_backend.labelstudio.regions import brush_to_mask

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
TOOL = REPO / "tools" / "container_standins.sh"
OVERRIDE = Path(__file__).with_name("compose.smoke.yml")
SHARED_DATA = Path(os.environ.get("DEXTR_SHARED_DATA", REPO.parent / "shared" / "data"))
REQUIRED = os.environ.get("DEXTR_REQUIRE_CONTAINERS") == "1"
IMAGE = "dextr-backend:cpu"
STEMS = ("106024", "124080", "153077")  # GrabCut pictures (../shared/data), as tests/test_e2e_labelstudio.py
TOKEN = "dextrsmoketoken0123456789abcdef01234567"
CONFIG = SMART_KEYPOINTS_CONFIG
MAX_IMAGE_GB = 1.5
BACKEND = ("redis", "api", "worker", "trainer", "images")  # the stack without Label Studio
REPORT: list[str] = []  # printed in the run's summary (conftest.py)


def say(line: str) -> None:
    REPORT.append(line)
    print(f"[containers] {line}", flush=True)


def unavailable(reason: str):
    if REQUIRED:
        pytest.fail(f"DEXTR_REQUIRE_CONTAINERS=1, but {reason}")
    pytest.skip(reason)


# --------------------------------------------------------------------------- engine and compose
def _answers(argv: list[str], env=None, timeout: float = 60) -> subprocess.CompletedProcess | None:
    if shutil.which(argv[0]) is None:
        return None
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    except (OSError, subprocess.TimeoutExpired):
        return None


def _version(text: str) -> tuple[int, ...]:
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    return tuple(int(g or 0) for g in match.groups()) if match else (0,)


def tool_env() -> dict:
    """The engine and, for Podman on hosts like this one, a private containers.conf (see the tool)."""
    env = dict(os.environ)
    proc = subprocess.run([str(TOOL), "env"], capture_output=True, text=True, env=env, timeout=120)
    if proc.returncode != 0:
        unavailable(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "no container engine")
    for line in proc.stdout.splitlines():
        name, _, value = line.partition("=")
        env[name] = value
    return env


def compose_argv(engine: str, env: dict) -> list[str]:
    if engine == "docker":
        for argv in (["docker", "compose"], ["docker-compose"]):
            probe = _answers([*argv, "version", "--short"], env)
            if probe and probe.returncode == 0 and _version(probe.stdout) >= (2, 24, 4):
                return argv
        unavailable("Docker Compose 2.24.4 or later is not installed (the CPU override uses !reset)")
    probe = _answers(["podman-compose", "--version"], env)
    if probe and probe.returncode == 0:
        found = re.search(r"podman-compose version (\S+)", probe.stdout)
        if found and _version(found.group(1)) >= (1, 3):
            return ["podman-compose"]
    unavailable("podman-compose 1.3 or later is not installed (pip install 'podman-compose>=1.3')")


class Stack:
    """One compose project of this test, with the engine's commands around it."""

    def __init__(self, engine: str, compose: list[str], env: dict, workdir: Path):
        self.engine, self.env, self.workdir = engine, env, workdir
        self.project = f"dextr-smoke-{os.getpid()}-{secrets.token_hex(2)}"
        self.api_port, self.ls_port = free_port(), free_port()
        self.api = f"http://127.0.0.1:{self.api_port}"
        self.ls = f"http://127.0.0.1:{self.ls_port}"
        self.images = workdir / "images"
        self.env_file = workdir / "smoke.env"
        self.pictures: list[tuple[str, np.ndarray, np.ndarray]] = []
        self.health: dict = {}
        self.compose = [
            *compose,
            "-p",
            self.project,
            "--env-file",
            str(self.env_file),
            "-f",
            str(DOCKER / "docker-compose.yml"),
            "-f",
            str(DOCKER / "docker-compose.cpu.yml"),
            "-f",
            str(OVERRIDE),
            "--profile",
            "label-studio",
        ]

    # ---------------------------------------------------------------- commands
    def run(self, argv: list[str], timeout: float = 600, check: bool = True, cwd: Path = REPO) -> str:
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=self.env, cwd=cwd)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"{' '.join(argv[:6])} ... ran over {timeout:.0f} s") from exc
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}")
        return proc.stdout

    def up(self, *services: str, no_deps: bool = False) -> None:
        self.run([*self.compose, "up", "-d", "--no-build", *(["--no-deps"] if no_deps else []), *services])

    def container(self, service: str) -> str:
        out = self.run(
            [
                self.engine,
                "ps",
                "-a",
                "-q",
                "--filter",
                f"label=com.docker.compose.project={self.project}",
                "--filter",
                f"label=com.docker.compose.service={service}",
            ]
        ).split()
        assert out, f"no container for service {service}"
        return out[0]

    def inspect(self, service: str, template: str) -> str:
        return self.run([self.engine, "inspect", "--format", template, self.container(service)]).strip()

    def logs(self, service: str) -> str:
        proc = subprocess.run(
            [self.engine, "logs", self.container(service)], capture_output=True, text=True, env=self.env, timeout=60
        )
        return proc.stdout + proc.stderr

    def leftovers(self) -> list[str]:
        label = f"label=com.docker.compose.project={self.project}"
        found = []
        for kind, argv in (
            ("container", ["ps", "-a", "-q", "--filter", label]),
            ("volume", ["volume", "ls", "-q", "--filter", label]),
            ("network", ["network", "ls", "-q", "--filter", label]),
        ):
            out = subprocess.run([self.engine, *argv], capture_output=True, text=True, env=self.env).stdout
            found += [f"{kind} {name}" for name in out.split()]
        if self.engine == "podman":
            out = subprocess.run(
                ["podman", "pod", "ps", "-q", "--filter", f"name=pod_{self.project}"],
                capture_output=True,
                text=True,
                env=self.env,
            ).stdout
            found += [f"pod {name}" for name in out.split()]
        return found

    def anonymous_volumes(self) -> set[str]:
        """Volumes the project's containers mount that carry no project label (an image's VOLUME)."""
        ids = subprocess.run(
            [self.engine, "ps", "-a", "-q", "--filter", f"label=com.docker.compose.project={self.project}"],
            capture_output=True,
            text=True,
            env=self.env,
        ).stdout.split()
        if not ids:
            return set()
        out = subprocess.run(
            [
                self.engine,
                "inspect",
                "--format",
                '{{range .Mounts}}{{if eq .Type "volume"}}{{.Name}} {{end}}{{end}}',
                *ids,
            ],
            capture_output=True,
            text=True,
            env=self.env,
        ).stdout
        named = set(
            subprocess.run(
                [self.engine, "volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={self.project}"],
                capture_output=True,
                text=True,
                env=self.env,
            ).stdout.split()
        )
        return set(out.split()) - named

    def down(self) -> list[str]:
        """``down -v``, then whatever is still there removed by force; returns what ``down`` left."""
        anonymous = self.anonymous_volumes()
        subprocess.run(
            [*self.compose, "down", "-v", "--remove-orphans", "-t", "5"], capture_output=True, env=self.env, timeout=300
        )
        left = self.leftovers()
        existing = set(
            subprocess.run(
                [self.engine, "volume", "ls", "-q"], capture_output=True, text=True, env=self.env
            ).stdout.split()
        )
        left += [f"volume {name}" for name in sorted(anonymous & existing)]
        for item in left:
            kind, name = item.split(" ", 1)
            argv = {
                "container": ["rm", "-f", "-v"],
                "volume": ["volume", "rm", "-f"],
                "network": ["network", "rm", "-f"],
                "pod": ["pod", "rm", "-f"],
            }[kind]
            subprocess.run([self.engine, *argv, name], capture_output=True, env=self.env, timeout=120)
        return left

    # ---------------------------------------------------------------- HTTP
    def get(self, url: str, headers=None, timeout: float = 10) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=timeout) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def post(self, url: str, payload, headers=None, timeout: float = 120) -> tuple[int, dict]:
        req = urllib.request.Request(
            url,
            data=json.dumps(payload).encode(),
            method="POST",
            headers={"Content-Type": "application/json", **(headers or {})},
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def redis_down_answer(self) -> str | None:
        """/health's 503 reason while Redis is down, or None while the api does not answer so."""
        try:
            status, body = self.get(self.api + "/health", timeout=5)
        except (OSError, ValueError):
            return None
        if status == 503 and "redis" in str(body.get("reason", "")).lower():
            return f"503 {body['reason']}"
        return None

    def wait_health(self, timeout: float, workers: int = 1) -> dict:
        deadline, last = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            try:
                status, body = self.get(self.api + "/health", timeout=5)
                last = (status, body)
                if status == 200 and body.get("workers") == workers and body.get("train_workers") == 1:
                    return body
            except (OSError, ValueError) as exc:
                last = repr(exc)
            time.sleep(1)
        raise AssertionError(
            f"/health not 200 with {workers} worker(s) within {timeout:.0f} s: {last}\n"
            f"worker log:\n{self.logs('worker')[-2000:]}\napi log:\n{self.logs('api')[-2000:]}"
        )


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- pictures
def pictures() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, BGR image, object mask): GrabCut's real pictures from ../shared/data where present,
    else one drawn picture (a self-hoster's checkout has no benchmark data)."""
    grabcut = SHARED_DATA / "GrabCut"
    if (grabcut / "data_GT").is_dir():
        out = []
        for stem in STEMS:
            image = cv2.imread(str(grabcut / "data_GT" / f"{stem}.jpg"))
            truth = cv2.imread(str(grabcut / "boundary_GT" / f"{stem}.bmp"), cv2.IMREAD_GRAYSCALE) > 128
            out.append((f"{stem}.jpg", image, truth))
        return out
    out = []
    for i, (center, axes, angle) in enumerate(
        (((160, 120), (90, 60), 20), ((150, 130), (70, 80), 0), ((170, 110), (100, 45), -30))
    ):
        image = np.full((240, 320, 3), (60 + 20 * i, 110, 40), np.uint8)
        cv2.ellipse(image, center, axes, angle, 0, 360, (40, 40, 220), -1)
        truth = np.zeros(image.shape[:2], np.uint8)
        cv2.ellipse(truth, center, axes, angle, 0, 360, 1, -1)
        out.append((f"ellipse{i}.png", image, truth.astype(bool)))
    return out


def keypoints(points, w: int, h: int) -> list[dict]:
    """Four clicks as Label Studio's labeling page sends them (KeyPointLabels, percent of the image)."""
    return [
        {
            "original_width": w,
            "original_height": h,
            "image_rotation": 0,
            "id": f"kp{i}",
            "from_name": "tag2",
            "to_name": "image",
            "type": "keypointlabels",
            "origin": "manual",
            "is_positive": True,
            "value": {
                "x": 100 * x / w,
                "y": 100 * y / h,
                "width": 0.5,
                "keypointlabels": ["Object"],
                "labels": ["Object"],
            },
        }
        for i, (x, y) in enumerate(points)
    ]


def iou_of(result: list[dict], truth: np.ndarray) -> float:
    brush = [r for r in result if r["type"] == "brushlabels"]
    assert len(brush) == 1 and brush[0]["value"]["brushlabels"] == ["Object"], result
    mask = brush_to_mask(brush[0]["value"], *truth.shape)
    return float((mask & truth).sum() / (mask | truth).sum())


def yaml_build() -> dict:
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    cpu = yaml.load((DOCKER / "docker-compose.cpu.yml").read_text(encoding="utf-8"), Loader=Loader)
    build = cpu["services"]["worker"]["build"]
    assert cpu["services"]["worker"]["image"] == IMAGE
    return build


def write_env_file(s: Stack) -> None:
    """docker/.env.example with the ports, token and small retraining settings of this run."""
    lines = (DOCKER / ".env.example").read_text(encoding="utf-8").splitlines()
    overrides = {
        "DEXTR_API_PORT": s.api_port,
        "LABEL_STUDIO_PORT": s.ls_port,
        "LABEL_STUDIO_USER_TOKEN": TOKEN,
        "LABEL_STUDIO_PASSWORD": secrets.token_hex(8),
        "DEXTR_ALLOWED_HOSTS": "images:8000",
        "DEXTR_TRAIN_EPOCHS": 1,
        "DEXTR_TRAIN_SAMPLES": 8,
        "DEXTR_TRAIN_MAX_MINUTES": 2,
        "LOG_FORMAT": "text",
        "DEXTR_SMOKE_IMAGES": s.images,
    }
    out = []
    for line in lines:
        name = line.partition("=")[0].strip()
        out.append(f"{name}={overrides.pop(name)}" if name in overrides and not line.startswith("#") else line)
    out += [f"{name}={value}" for name, value in overrides.items()]
    s.env_file.write_text("\n".join(out) + "\n", encoding="utf-8")


def wait_for(predicate, timeout: float, describe, what: str):
    if not poll(predicate, timeout, step=1):
        raise AssertionError(f"{what}: not within {timeout:.0f} s\n{describe()}")


def predict(stack: Stack, name: str, truth: np.ndarray) -> float:
    """``POST /predict`` as Label Studio sends it, for 4 keypoints on the object's extreme points;
    the worker fetches the picture from the ``images`` service. Returns the mask's IoU."""
    h, w = truth.shape
    payload = {
        "tasks": [{"id": 1, "data": {"image": f"http://images:8000/{name}"}}],
        "project": "1.1700000000",
        "label_config": CONFIG,
        "params": {"context": {"result": keypoints(extreme_points(truth), w, h)}},
    }
    status, body = stack.post(stack.api + "/predict", payload)
    assert status == 200, body
    (entry,) = body["results"]
    return iou_of(entry["result"], truth)


def training_entry(stack: Stack, project: int) -> dict:
    _, answer = stack.get(stack.api + "/train/status")
    return next((j for j in answer["jobs"] if j["project"] == project), {})
