"""What Content-Type a real Label Studio 1.23.2 sends to an ML backend (issue 26): the backend reads
``application/json`` only (415 otherwise), so every call Label Studio makes must declare it.

Label Studio talks here to a recording server on 127.0.0.1 that answers like an ML backend: it
is connected (``/health``, ``/setup``), asked for a prediction through the labeling page's own
API (``/predict``), sent an annotation event and *Start Training* (``/webhook``). The real backend
with this check in place serves the same traffic in ``test_e2e_labelstudio``."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from labelstudio_server import SMART_KEYPOINTS_CONFIG
from security.hostile import Server  # tests/security is a namespace package here
from services import poll

pytestmark = pytest.mark.labelstudio


def ml_backend(server: Server) -> Server:
    def answer(payload, status=200):
        body = json.dumps(payload).encode()
        return lambda handler, _: handler.answer(status, body, {"Content-Type": "application/json"})

    server.routes["/health"] = answer({"status": "UP", "model_class": "Recorder"})
    server.routes["/"] = server.routes["/health"]
    server.routes["/setup"] = answer({"model_version": "recorder"})
    server.routes["/versions"] = answer({"versions": ["recorder"]})
    server.routes["/predict"] = answer({"results": [{"result": [], "score": 0, "model_version": "recorder"}]})
    server.routes["/webhook"] = answer({"status": "ok"}, 201)
    return server


def test_label_studio_posts_json_to_every_route_the_backend_checks(label_studio):
    ls = label_studio
    recorder = ml_backend(Server("127.0.0.1"))
    try:
        project = ls.api("POST", "/api/projects", {"title": "content-type", "label_config": SMART_KEYPOINTS_CONFIG})[
            "id"
        ]
        ok, jpg = cv2.imencode(".jpg", np.full((40, 60, 3), 128, np.uint8))
        ls.api("POST", f"/api/projects/{project}/import", files={"file": ("grey.jpg", jpg.tobytes())})
        task = ls.api("GET", f"/api/tasks?project={project}")["tasks"][0]
        ml = ls.api(
            "POST", "/api/ml", {"project": project, "url": recorder.url, "is_interactive": True, "title": "recorder"}
        )
        click = {
            "original_width": 60,
            "original_height": 40,
            "image_rotation": 0,
            "id": "kp0",
            "from_name": "tag2",
            "to_name": "image",
            "type": "keypointlabels",
            "is_positive": True,
            "value": {"x": 50, "y": 50, "width": 0.5, "keypointlabels": ["Object"]},
        }
        ls.api(
            "POST", f"/api/ml/{ml['id']}/interactive-annotating", {"task": task["id"], "context": {"result": [click]}}
        )
        ls.api("POST", f"/api/tasks/{task['id']}/annotations", {"result": []})
        ls.api("POST", f"/api/ml/{ml['id']}/train", {})
        seen = lambda path: [r for r in recorder.log if r["line"].startswith(f"POST {path} ")]  # noqa: E731
        assert poll(lambda: seen("/setup") and seen("/predict") and len(seen("/webhook")) >= 2, 60), [
            r["line"] for r in recorder.log
        ]
    finally:
        recorder.stop()
    posts = [r for r in recorder.log if r["line"].startswith("POST ")]
    types = {r["line"].split()[1]: _content_type(r["headers"]) for r in posts}
    assert {"/setup", "/predict", "/webhook"} <= set(types), types
    assert all(t.split(";")[0].strip().lower() == "application/json" for t in types.values()), types
    actions = {json.loads(r["body"]).get("action") for r in seen("/webhook")}
    assert {"START_TRAINING", "ANNOTATION_CREATED"} <= actions, actions


def _content_type(headers: str) -> str:
    for line in headers.splitlines():
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-type":
            return value.strip()
    return ""
