"""The ``label-studio`` profile of docker/docker-compose.yml, added to the stack of conftest.py.

- Label Studio 1.23.2 (the official image where it can be pulled, else a stand-in built from PyPI
  ``label-studio==1.23.2`` by tools/container_standins.sh) starts with its first user and legacy
  token from docker/.env;
- it connects the backend by its service name, ``http://api:9090`` (Label Studio calls /health and
  /setup from its own container), and gets a mask for 4 keypoints: Label Studio -> api -> worker,
  which fetches the task image from ``http://label-studio:8080`` with the token;
- accepted labels, then *Start Training* at ``/webhook``: the trainer reads them from Label
  Studio, trains and finishes, as ``/train/status`` reports.

A module of its own because the stand-in's cold build (pip installs Label Studio, about 4 minutes
on two cores) would double test_compose_stack.py's cold time. Same skips as that module.
"""

from __future__ import annotations

import secrets
import subprocess
import time
import urllib.request
from pathlib import Path

import cv2
import pytest

from dextr_backend.geometry import extreme_points
from dextr_backend.labelstudio.regions import mask_to_brush

from .smoke_stack import CONFIG, TOKEN, TOOL, iou_of, keypoints, say, training_entry, unavailable, wait_for

pytestmark = pytest.mark.containers


@pytest.fixture(scope="module")
def label_studio(stack):
    """Label Studio of the profile: up, with a project of the pictures and the backend at http://api:9090."""
    t = time.monotonic()
    proc = subprocess.run(
        [str(TOOL), "images", "label-studio"], capture_output=True, text=True, env=stack.env, timeout=1800
    )
    if proc.returncode != 0:
        unavailable(f"Label Studio image: {proc.stderr.strip()[-500:]}")
    say(f"base image {proc.stdout.strip()}, ready in {time.monotonic() - t:.0f} s")
    t = time.monotonic()
    stack.up("label-studio", no_deps=True)
    headers = {"Authorization": f"Token {TOKEN}"}

    def ready():
        try:
            req = urllib.request.Request(stack.ls + "/api/projects", headers=headers)
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status == 200
        except (OSError, ValueError):
            return False

    wait_for(ready, 420, lambda: stack.logs("label-studio")[-3000:], "Label Studio answers with the token")
    say(f"Label Studio up in {time.monotonic() - t:.0f} s")
    status, project = stack.post(stack.ls + "/api/projects", {"title": "smoke", "label_config": CONFIG}, headers)
    assert status == 201, project
    for name, image, _ in stack.pictures:
        ok, data = cv2.imencode(Path(name).suffix, image)
        assert ok
        upload(stack.ls + f"/api/projects/{project['id']}/import", name, data.tobytes(), headers)
    status, tasks = stack.get(stack.ls + f"/api/tasks?project={project['id']}&fields=all", headers, timeout=60)
    assert status == 200, tasks
    tasks = sorted(tasks["tasks"], key=lambda task: task["id"])
    # Label Studio checks the backend when it is added: /health and /setup, from its own container.
    status, ml = stack.post(
        stack.ls + "/api/ml",
        {"project": project["id"], "url": "http://api:9090", "is_interactive": True, "title": "dextr"},
        headers,
    )
    assert status == 201, f"Label Studio could not connect http://api:9090: {ml}"
    return {"project": project["id"], "tasks": tasks, "ml": ml["id"], "headers": headers}


def upload(url: str, name: str, content: bytes, headers: dict) -> None:
    boundary = "dextrsmoke" + secrets.token_hex(8)
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    req = urllib.request.Request(
        url, data=body, method="POST", headers={**headers, "Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    with urllib.request.urlopen(req, timeout=120) as r:
        assert r.status == 201


def test_label_studio_gets_a_mask_for_four_keypoints(stack, label_studio):
    """Label Studio -> http://api:9090 -> worker, which fetches the task image from http://label-studio:8080."""
    name, _, truth = stack.pictures[0]
    h, w = truth.shape
    status, answer = stack.post(
        stack.ls + f"/api/ml/{label_studio['ml']}/interactive-annotating",
        {"task": label_studio["tasks"][0]["id"], "context": {"result": keypoints(extreme_points(truth), w, h)}},
        label_studio["headers"],
    )
    assert status == 200, answer
    iou = iou_of(answer["data"]["result"], truth)
    say(f"Label Studio, 4 keypoints on {name}: IoU {iou:.3f}")
    assert iou > 0.8


def test_start_training_trains_on_the_trainer(stack, label_studio):
    """Accepted labels in Label Studio, then START_TRAINING at /webhook: the trainer trains and finishes."""
    for task, (_, _, truth) in zip(label_studio["tasks"], stack.pictures):
        status, _ = stack.post(
            stack.ls + f"/api/tasks/{task['id']}/annotations",
            {
                "result": [
                    {
                        "from_name": "tag",
                        "to_name": "image",
                        "type": "brushlabels",
                        "original_width": truth.shape[1],
                        "original_height": truth.shape[0],
                        "image_rotation": 0,
                        "value": {"format": "rle", "rle": mask_to_brush(truth), "brushlabels": ["Object"]},
                    }
                ]
            },
            label_studio["headers"],
        )
        assert status == 201
    t = time.monotonic()
    status, body = stack.post(
        stack.api + "/webhook", {"action": "START_TRAINING", "project": {"id": label_studio["project"]}}
    )
    assert status == 201, body
    entry = {}

    def done():
        nonlocal entry
        entry = training_entry(stack, label_studio["project"])
        return entry.get("status") in ("finished", "failed")

    wait_for(done, 420, lambda: f"{entry}\ntrainer log:\n{stack.logs('trainer')[-3000:]}", "training ends")
    assert entry["status"] == "finished", entry
    trainer = stack.inspect("trainer", "{{.Config.Hostname}}")
    assert entry["runs"][0]["worker"].startswith(trainer + "-"), (entry["runs"][0]["worker"], trainer)
    outcome = entry["result"]["ok"]
    say(f"START_TRAINING ran on the trainer in {time.monotonic() - t:.0f} s: {outcome.get('reason') or outcome}"[:300])
