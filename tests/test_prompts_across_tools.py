"""One rule for every tool (issue 29): Label Studio, CVAT's native function and its nuclio function,
given the same four extreme points and one negative click on a real GrabCut photo, answer the
same mask, and the negative click changes it in all three (it reaches the corrector everywhere).

Label Studio's side runs through the real HTTP app with the picture inline (a ``data:image`` URI),
CVAT's through cvat-sdk's own prompt and mask types, nuclio's through its handler."""

from __future__ import annotations

import base64

import cv2
import numpy as np
import pytest

pytest.importorskip("cvat_sdk", reason="cvat-sdk not installed (pip install 'dextr-backend[cvat]')")

from fastapi.testclient import TestClient  # noqa: E402
from services import env_settings  # noqa: E402
from test_cvat import STEMS, Context, Prompts, call, decoded, encoded, grabcut, nuclio_context  # noqa: E402
from test_labelstudio_backend import CONFIG, kp  # noqa: E402

from dextr_backend.cvat import native  # noqa: E402
from dextr_backend.evaluation.clicks import next_click  # noqa: E402
from dextr_backend.geometry import extreme_points  # noqa: E402
from dextr_backend.labelstudio.regions import brush_to_mask  # noqa: E402
from dextr_backend.labelstudio_api.app import create_app  # noqa: E402
from dextr_backend.service import resident  # noqa: E402


@pytest.fixture(scope="module")
def default_predictor(tmp_path_factory):
    from dextr_backend.build import build_predictor
    from dextr_backend.weights.store import WeightsStore

    store = WeightsStore(tmp_path_factory.mktemp("tools-weights"))
    if store.current_name() is None:
        pytest.skip("no shipped default weights (weights/index.json has no 'default')")
    return build_predictor(store=store, device="cpu")


def a_negative_click(predictor, shared_data):
    """A GrabCut photo, its extreme points, and the protocol's first corrective click where that is
    a negative one (the 4-click mask covers background)."""
    for stem in STEMS + ("153077", "124084", "189080", "65019"):
        image, gt, unknown = grabcut(shared_data, stem)
        points = extreme_points(gt)
        click = next_click(predictor.predict(image, points).mask, gt, unknown)
        if click is not None and not click.positive:
            return image, points, (click.x, click.y)
    pytest.skip("no GrabCut object among those tried needs a negative first click")


def label_studio_mask(image, points, negative, tmp_path, monkeypatch, predictor) -> np.ndarray:
    h, w = image.shape[:2]
    png = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))[1].tobytes()
    uri = "data:image/png;base64," + base64.b64encode(png).decode()
    clicks = [kp(x, y, w=w, h=h) for x, y in points] + [kp(*negative, positive=False, w=w, h=h)]
    monkeypatch.setenv("DEXTR_WEIGHTS_DIR", str(tmp_path / "store"))
    app = create_app(env_settings(device="cpu"), resident.PinnedPredictor(predictor))
    with TestClient(app) as client:
        r = client.post(
            "/predict",
            json={
                "tasks": [{"id": 1, "data": {"image": uri}}],
                "label_config": CONFIG,
                "params": {"context": {"result": clicks}},
            },
        )
    assert r.status_code == 200, r.text[:300]
    (brush,) = [x for x in r.json()["results"][0]["result"] if x["type"] == "brushlabels"]
    return brush_to_mask(brush["value"], h, w)


def test_the_same_clicks_give_the_same_mask_in_every_tool(shared_data, default_predictor, tmp_path, monkeypatch):
    image, points, negative = a_negative_click(default_predictor, shared_data)
    pos = [tuple(map(float, p)) for p in points]

    studio = label_studio_mask(image, points, negative, tmp_path, monkeypatch, default_predictor)

    resident.use(resident.PinnedPredictor(default_predictor))
    try:
        cvat = decoded(native.detect(Context(), image, Prompts(pos=pos, neg=[negative])), image)
    finally:
        resident.use(None)

    status, answer = call(
        nuclio_context(default_predictor),
        {
            "image": encoded(image, ".png"),
            "pos_points": [list(p) for p in pos],
            "neg_points": [list(negative)],
            "obj_bbox": None,
        },
    )
    assert status == 200
    serverless = np.array(answer["mask"], dtype=bool)

    four_clicks = default_predictor.predict(image, points).mask
    assert not np.array_equal(studio, four_clicks), "the negative click changed nothing in Label Studio"
    np.testing.assert_array_equal(cvat, studio)
    np.testing.assert_array_equal(serverless, studio)
