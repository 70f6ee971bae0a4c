"""Labels that are deliberately wrong are not promoted, end to end, and the admin can see why.

A Label Studio stand-in serves DAVIS frames whose accepted brush masks are shifted by a quarter of
their box; a real Redis and a real ``dextr-backend worker`` run *Start Training* with the job's
own path (2-fold cross-validation on a small label set); the current version is the shipped
default; the guard folder holds GrabCut objects (never trained on). The candidate learns the
shift (40 steps per training suffice: in a run of this test the new version lost 7.5 points on
these 12 guard objects, 95 % interval -14.1 to -1.7, while the wrong labels called it 8.3 points
better), more than the 2 points the guard allows on average, so it is kept out. /train/status, the
``train-status`` table and the model card show the gain, the interval and the rule.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from services import Worker, env_settings, press_start_training
from test_training_jobs import PROJECT, TOKEN, FakeLabelStudio, project_status, wait_until

from dextr_backend.cli import main
from dextr_backend.queue.client import QueueClient
from dextr_backend.weights.store import WeightsStore

pytestmark = pytest.mark.slow  # two real trainings through a worker: 9 to 13 minutes on 2 cores

FRAMES = (0, 40, 80, 120, 160, 199)  # DAVIS frames of different clips
GUARD = 12  # GrabCut objects


def shifted(mask: np.ndarray) -> np.ndarray:
    """The mask moved right and down by a quarter of its box."""
    ys, xs = np.nonzero(mask)
    dx, dy = (xs.max() - xs.min() + 1) // 4, (ys.max() - ys.min() + 1) // 4
    out = np.zeros_like(mask)
    out[dy:, dx:] = mask[: mask.shape[0] - dy, : mask.shape[1] - dx]
    return out


def shifted_labels(davis: Path, folder: Path) -> Path:
    """``images/`` + ``masks/`` as the stand-in serves them, every mask shifted."""
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    for frame in FRAMES:
        image = cv2.imread(str(davis / "img" / f"{frame:03d}.jpg"))
        mask = cv2.imread(str(davis / "gt" / f"{frame:03d}.png"), cv2.IMREAD_GRAYSCALE) > 0
        cv2.imwrite(str(folder / "images" / f"{frame:03d}.png"), image)
        cv2.imwrite(str(folder / "masks" / f"{frame:03d}.png"), shifted(mask).astype(np.uint8) * 255)
    return folder


def guard_folder(grabcut: Path, folder: Path) -> Path:
    """The first GrabCut objects, in GrabCut's own layout."""
    (folder / "data_GT").mkdir(parents=True)
    (folder / "boundary_GT").mkdir()
    for mask in sorted((grabcut / "boundary_GT").glob("*.bmp"))[:GUARD]:
        image = next((grabcut / "data_GT").glob(mask.stem + ".*"))
        shutil.copy(image, folder / "data_GT" / image.name)
        shutil.copy(mask, folder / "boundary_GT" / mask.name)
    return folder


@pytest.fixture()
def harmful_project(shared_data, tmp_path):
    ls = FakeLabelStudio(shifted_labels(shared_data / "DAVIS", tmp_path / "labels"))
    yield ls
    ls.stop()


def test_a_candidate_trained_on_shifted_masks_is_not_promoted(
    harmful_project, shared_data, private_redis, tmp_path, capsys
):
    store_dir = tmp_path / "store"
    current = WeightsStore(store_dir).current_name()  # the shipped default
    env = {
        "REDIS_URL": private_redis.url,
        "LABEL_STUDIO_URL": harmful_project.url,
        "LABEL_STUDIO_API_KEY": TOKEN,
        "DEXTR_WEIGHTS_DIR": str(store_dir),
        "DEXTR_DATA_DIR": str(tmp_path / "data"),
        "DEXTR_DEVICE": "cpu",
        "DEXTR_THREADS": "2",
        "DEXTR_TRAIN_EPOCHS": "1",
        "DEXTR_TRAIN_SAMPLES": "320",
        "DEXTR_TRAIN_GUARD_DIR": str(guard_folder(shared_data / "GrabCut", tmp_path / "guard")),
        "LOG_LEVEL": "INFO",
    }
    worker = Worker(private_redis.url, env, queues="dextr-train", log=tmp_path / "trainer.log").start()
    try:
        client = QueueClient(private_redis.url)
        assert press_start_training(client, PROJECT)["status"] == "queued"
        status = wait_until(
            lambda: (lambda s: s if s["state"] == "idle" and s["runs"] else None)(project_status(client)),
            1500,
            "the run to end",
        )
    finally:
        worker.stop()
    run = status["runs"][0]
    assert run["status"] == "finished", (run, (tmp_path / "trainer.log").read_text()[-3000:])
    result = run["result"]
    decision = result["decision"]
    labels, guard = decision["exams"][0], decision["exams"][1]
    assert not result["promoted"] and decision["verdict"] == "worse", result
    assert guard["name"] == "guard" and guard["verdict"] == "worse" and guard["gain"] < -2.0
    assert guard["high"] < 0  # it did lose on objects it never saw: not a noise veto
    assert labels["objects"] == len(FRAMES) and labels["where"].endswith("(2-fold cross-validation)")
    assert WeightsStore(store_dir).current_name() == current  # the team's model stays
    assert result["reason"].startswith(f"Not promoted: on the {GUARD} guard objects")
    assert f"{guard['low']:+.1f} to {guard['high']:+.1f}" in result["reason"]

    # /train/status (the route, on the same Redis) and the train-status table show it all
    from fastapi.testclient import TestClient

    from dextr_backend.labelstudio_api.app import create_app

    with TestClient(create_app(env_settings(redis_url=private_redis.url, device="cpu"))) as http:
        (served,) = [p for p in http.get("/train/status").json()["jobs"] if p["project"] == PROJECT]
    shown = served["runs"][0]["result"]["decision"]
    assert shown["rule"].startswith("promote unless measurably worse") and shown["exams"][1]["low"] == guard["low"]
    assert served["runs"][0]["result"]["interval"] == [labels["low"], labels["high"]]
    assert main(["train-status", "--redis-url", private_redis.url]) == 0
    table = capsys.readouterr().out
    assert f"{result['version']}: not promoted ({decision['verdict']}; gain {labels['gain']:+.1f} [" in table
    assert f"why: Not promoted: on the {GUARD} guard objects" in table
    assert "rule: promote unless measurably worse" in table
    assert f"guard {guard['gain']:+.1f} [{guard['low']:+.1f}, {guard['high']:+.1f}] on {GUARD} objects" in table

    card = WeightsStore(store_dir).get(result["version"]).card
    assert card["decision"] == result["reason"] and card["rule"] == shown["rule"]
    assert card["promotion"]["exams"][1]["high"] == guard["high"] and card["evaluation"]["folds"] == 2
    assert card["data"]["train_objects"] == len(FRAMES)  # the shipped model saw every label
