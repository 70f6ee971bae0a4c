"""End to end: a real Label Studio 1.23.2, the backend as a real HTTP server, real Redis, real
rq workers. Clicks go through Label Studio's own interactive-annotating API, as the browser does."""

from __future__ import annotations

import time

import cv2
import pytest
import torch
from labelstudio_server import SMART_KEYPOINTS_CONFIG
from services import Backend, Worker

from dextr_backend.geometry import extreme_points
from dextr_backend.labelstudio.regions import brush_to_mask, mask_to_brush
from dextr_backend.models import build_model
from dextr_backend.weights.store import WeightsStore

pytestmark = pytest.mark.labelstudio

CONFIG = SMART_KEYPOINTS_CONFIG
IMAGES = ("106024", "124080", "153077")


def grabcut(shared_data, stem):
    image = cv2.imread(str(shared_data / "GrabCut" / "data_GT" / f"{stem}.jpg"))
    gt = cv2.imread(str(shared_data / "GrabCut" / "boundary_GT" / f"{stem}.bmp"), cv2.IMREAD_GRAYSCALE)
    return image, gt > 128


def keypoints(points, w, h):
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


@pytest.fixture()
def stack(label_studio, redis_server, tmp_path, shared_data):
    import redis

    conn = redis.Redis.from_url(redis_server.url)
    for key in list(conn.scan_iter("dextr:*")) + list(conn.scan_iter("rq:job:train-project-*")):
        conn.delete(key)
    store_dir = tmp_path / "store"
    env = {
        "REDIS_URL": redis_server.url,
        "LABEL_STUDIO_URL": label_studio.url,
        "LABEL_STUDIO_API_KEY": label_studio.token,
        "DEXTR_WEIGHTS_DIR": str(store_dir),
        "DEXTR_DEVICE": "cpu",
        "DEXTR_TRAIN_EPOCHS": "1",
        "DEXTR_TRAIN_SAMPLES": "16",
        "DEXTR_TRAIN_MAX_MINUTES": "3",
        "DEXTR_DATA_DIR": str(tmp_path / "data"),
        "LOG_LEVEL": "INFO",
        # Three pictures leave one object for validation; this test checks the plumbing from Label
        # Studio to a promoted version, not whether one object is enough evidence (it is not, in use).
        "DEXTR_TRAIN_MIN_VAL_OBJECTS": "1",
    }
    workers = [
        Worker(redis_server.url, env, log=tmp_path / "predict-worker.log").start(),
        Worker(redis_server.url, env, queues="dextr-train", log=tmp_path / "train-worker.log").start(),
    ]
    backend = Backend(env, log=tmp_path / "backend.log").start()
    yield {"ls": label_studio, "backend": backend, "store": WeightsStore(store_dir), "workers": workers}
    backend.stop()
    for w in workers:
        w.stop()


def test_clicks_in_label_studio_become_a_mask_and_training_bumps_the_version(stack, shared_data):
    ls, backend, store = stack["ls"], stack["backend"], stack["store"]
    project = ls.api("POST", "/api/projects", {"title": "e2e", "label_config": CONFIG})["id"]
    for stem in IMAGES:
        image, _ = grabcut(shared_data, stem)
        ok, jpg = cv2.imencode(".jpg", image)
        ls.api("POST", f"/api/projects/{project}/import", files={"file": (f"{stem}.jpg", jpg.tobytes())})
    tasks = sorted(ls.api("GET", f"/api/tasks?project={project}&fields=all")["tasks"], key=lambda t: t["id"])
    ml = ls.api("POST", "/api/ml", {"project": project, "url": backend.url, "is_interactive": True, "title": "dextr"})

    # 1. Four extreme clicks, sent the way the labeling page sends them.
    image, truth = grabcut(shared_data, IMAGES[0])
    h, w = truth.shape
    answer = ls.api(
        "POST",
        f"/api/ml/{ml['id']}/interactive-annotating",
        {"task": tasks[0]["id"], "context": {"result": keypoints(extreme_points(truth), w, h)}},
    )
    result = answer["data"]["result"]
    brush = [r for r in result if r["type"] == "brushlabels"]
    assert len(brush) == 1 and brush[0]["value"]["brushlabels"] == ["Object"]
    mask = brush_to_mask(brush[0]["value"], h, w)
    iou = (mask & truth).sum() / (mask | truth).sum()
    assert iou > 0.8, f"IoU {iou:.3f} through Label Studio"

    # 1b. One correction where the annotator would click (the protocol's next click: an Alt-click
    # where the mask covers background, a plain one where it misses the object). The shipped
    # default takes corrections: the mask changes and comes closer to the truth.
    from dextr_backend.evaluation.clicks import next_click

    click = next_click(mask, truth)
    extra = {**keypoints([(click.x, click.y)], w, h)[0], "id": "kp-fix", "is_positive": click.positive}
    corrected = ls.api(
        "POST",
        f"/api/ml/{ml['id']}/interactive-annotating",
        {"task": tasks[0]["id"], "context": {"result": keypoints(extreme_points(truth), w, h) + [extra]}},
    )
    (fixed,) = [r for r in corrected["data"]["result"] if r["type"] == "brushlabels"]
    fixed = brush_to_mask(fixed["value"], h, w)
    assert (fixed != mask).any(), "the corrective click did not change the mask"
    assert (fixed & truth).sum() / (fixed | truth).sum() > iou, "the corrective click made the mask worse"
    assert "take no corrective clicks" not in stack["workers"][0].log.read_text()

    # 2. Accepted labels, then Start Training: a better model is promoted and LS sees its version.
    torch.manual_seed(0)
    store.add_version(build_model("lite0").state_dict(), "lite0", name="untrained", make_current=True)
    for task, stem in zip(tasks, IMAGES):
        _, gt = grabcut(shared_data, stem)
        ls.api(
            "POST",
            f"/api/tasks/{task['id']}/annotations",
            {
                "result": [
                    {
                        "from_name": "tag",
                        "to_name": "image",
                        "type": "brushlabels",
                        "original_width": gt.shape[1],
                        "original_height": gt.shape[0],
                        "image_rotation": 0,
                        "value": {"format": "rle", "rle": mask_to_brush(gt), "brushlabels": ["Object"]},
                    }
                ]
            },
        )
    ls.api("POST", f"/api/ml/{ml['id']}/train", {})
    deadline = time.monotonic() + 240
    status = None
    while time.monotonic() < deadline:
        import json
        import urllib.request

        with urllib.request.urlopen(backend.url + "/train/status", timeout=5) as r:
            jobs = json.loads(r.read())["jobs"]
        status = jobs[0] if jobs else None
        if status and status["status"] in ("finished", "failed"):
            break
        time.sleep(1)
    assert status and status["status"] == "finished", status
    outcome = status["result"]["ok"]
    assert outcome["promoted"] and outcome["baseline"] == "untrained"
    new_version = outcome["version"]
    assert store.current().name == new_version

    again = ls.api(
        "POST",
        f"/api/ml/{ml['id']}/interactive-annotating",
        {"task": tasks[0]["id"], "context": {"result": keypoints(extreme_points(truth), w, h)}},
    )
    assert new_version in str(again), "Label Studio did not get the new model version"
