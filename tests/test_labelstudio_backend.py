"""Label Studio /predict requests -> brush and polygon results, with images over real HTTP."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from dextr_backend.errors import InputError
from dextr_backend.geometry import box_points
from dextr_backend.labelstudio.images import LabelStudioImages
from dextr_backend.labelstudio.predictions import answer, segment_and_answer
from dextr_backend.labelstudio.protocol import LabelConfig, prompts_from_results
from dextr_backend.labelstudio.regions import brush_to_mask
from dextr_backend.labelstudio.requests import parse_request, stored_prompts, work
from dextr_backend.labelstudio.setups import SetupStore
from dextr_backend.models import build_model
from dextr_backend.service.cache import ImageCache
from dextr_backend.service.resident import ResidentPredictor
from dextr_backend.service.segmentation import LocalSegmenter
from dextr_backend.settings import Settings
from dextr_backend.weights.store import WeightsStore

CONFIG = """<View>
  <Image name="image" value="$image"/>
  <BrushLabels name="tag" toName="image"><Label value="Object"/><Label value="Car"/></BrushLabels>
  <PolygonLabels name="poly" toName="image"><Label value="Object"/></PolygonLabels>
  <KeyPointLabels name="tag2" toName="image" smart="true"><Label value="Object" smart="true"/></KeyPointLabels>
  <RectangleLabels name="box" toName="image" smart="true"><Label value="Object"/></RectangleLabels>
</View>"""
W, H = 160, 120


def kp(x, y, label="Object", positive=True, w=W, h=H):
    return {
        "original_width": w,
        "original_height": h,
        "image_rotation": 0,
        "from_name": "tag2",
        "to_name": "image",
        "type": "keypointlabels",
        "is_positive": positive,
        "value": {"x": 100 * x / w, "y": 100 * y / h, "width": 0.5, "keypointlabels": [label]},
    }


def rect(x0, y0, x1, y1, label="Object"):
    return {
        "original_width": W,
        "original_height": H,
        "from_name": "box",
        "to_name": "image",
        "type": "rectanglelabels",
        "value": {
            "x": 100 * x0 / W,
            "y": 100 * y0 / H,
            "width": 100 * (x1 - x0) / W,
            "height": 100 * (y1 - y0) / H,
            "rotation": 0,
            "rectanglelabels": [label],
        },
    }


CLICKS = [kp(30, 60), kp(130, 62), kp(80, 20), kp(82, 100)]


def test_label_config_pairs_and_labels():
    cfg = LabelConfig.parse(CONFIG)
    assert cfg.images == {"image": "image"}
    assert cfg.output("BrushLabels", "image", "Car").name == "tag"
    assert cfg.output("PolygonLabels", "image", "Object").name == "poly"
    assert cfg.output("KeyPointLabels", "image", "Object").smart
    with pytest.raises(InputError, match="XML"):
        LabelConfig.parse("<View><Image")
    with pytest.raises(InputError, match="Image"):
        LabelConfig.parse("<View><Text name='t' value='$t'/></View>")


def test_context_points_in_pixels_grouped_by_label():
    prompts = prompts_from_results(CLICKS + [kp(5, 5, positive=False), kp(10, 10, label="Car")])
    assert [p.label for p in prompts] == ["Object", "Car"]
    obj = prompts[0]
    np.testing.assert_allclose(obj.prompt().extreme_points, [[30, 60], [130, 62], [80, 20], [82, 100]])
    np.testing.assert_allclose(obj.negatives, [(5.0, 5.0)])
    assert obj.ready and not prompts[1].ready


def test_edge_clicks_are_clamped_and_outside_clicks_refused():
    p = prompts_from_results([kp(W, H)])[0]
    assert p.points == [(W - 1, H - 1)]
    bad = kp(10, 10)
    bad["value"]["x"] = 130.0
    with pytest.raises(InputError, match="outside"):
        prompts_from_results([bad])


def test_stored_annotations_give_one_object_per_four_keypoints():
    more = [kp(10, 10), kp(40, 12), kp(25, 2), kp(24, 30)]
    task = {"annotations": [{"id": 1, "result": CLICKS + more}]}
    prompts = stored_prompts(task)
    assert len(prompts) == 2 and all(len(p.points) == 4 for p in prompts)
    assert stored_prompts({"predictions": [{"result": [rect(10, 10, 50, 40)]}]})[0].box is not None


def test_box_midpoints():
    np.testing.assert_allclose(box_points((10, 20, 50, 60), 100, 100), [[10, 40], [50, 40], [30, 20], [30, 60]])


@pytest.mark.parametrize(
    "body, message",
    [
        ([], "JSON object"),
        ({}, "tasks"),
        ({"tasks": []}, "tasks"),
        ({"tasks": ["x"]}, "task must be an object"),
        ({"tasks": [{}]}, "label_config"),
        ({"tasks": [{}], "label_config": CONFIG, "params": {"context": "nope"}}, "context"),
    ],
)
def test_malformed_requests(body, message):
    with pytest.raises(InputError, match=message):
        parse_request(body)


class LabelStudioBackend:
    """A /predict body answered in this process by the pieces the server's in-process mode
    composes (its compute slots aside)."""

    def __init__(self, settings: Settings, resident: ResidentPredictor, cache: ImageCache):
        self.settings, self.resident, self.cache = settings, resident, cache
        images = LabelStudioImages(settings, SetupStore(None), cache)
        self.segmenter = LocalSegmenter(resident, images, settings.predict_timeout)

    def predict(self, body: dict) -> dict:
        parsed = parse_request(body, self.settings)
        todo = work(parsed)
        if not todo:
            return answer(parsed, [], self.resident.version, [], self.settings.output)
        deadline = time.monotonic() + self.settings.predict_timeout
        return segment_and_answer(parsed, todo, self.segmenter, deadline, self.settings.output)


@pytest.fixture()
def backend(tmp_path, image_server):
    torch.manual_seed(0)
    store = WeightsStore(tmp_path / "store", shipped_dir=tmp_path / "none")
    store.add_version(build_model("lite0").state_dict(), "lite0", name="random", make_current=True, threshold=0.0)
    settings = Settings(allowed_hosts=(image_server,), device="cpu")
    return LabelStudioBackend(settings, ResidentPredictor(settings, store), ImageCache())


def request(host, context_result=None, task=None, image="ellipse.png"):
    task = task or {"id": 7, "data": {"image": f"http://{host}/{image}"}}
    params = {"context": {"result": context_result}} if context_result is not None else {"context": None}
    return {"tasks": [task], "project": "3.1700000000", "label_config": CONFIG, "params": params}


def test_interactive_four_clicks_give_a_brush_mask(backend, image_server, monkeypatch):
    from dextr_backend.labelstudio import images

    out = backend.predict(request(image_server, CLICKS))
    (entry,) = out["results"]
    assert entry["model_version"] == out["model_version"] == "random"
    brush = [r for r in entry["result"] if r["type"] == "brushlabels"]
    assert len(brush) == 1 and brush[0]["from_name"] == "tag" and brush[0]["value"]["brushlabels"] == ["Object"]
    mask = brush_to_mask(brush[0]["value"], H, W)
    # threshold 0 keeps the clicks' box: the whole pipeline ran, paste-back included
    assert mask[20:101, 30:131].all() and not mask[:20].any()
    assert len(backend.cache) == 1
    monkeypatch.setattr(images, "fetch_bytes", lambda *a, **kw: pytest.fail("fetched the image again"))
    again = backend.predict(request(image_server, CLICKS))  # repeated clicks: no re-download
    assert again["results"][0]["result"][0]["value"] == brush[0]["value"]


def test_fewer_than_four_clicks_give_no_prediction_for_the_task(backend, image_server):
    """One entry per task (an empty top-level list is an error in Label Studio's page), and that
    entry is an empty list of predictions: an empty *result* would be stored as a prediction when
    a task opens, and deleted clicks when Auto-Accept accepts it (tests/browser cases b and e)."""
    out = backend.predict(request(image_server, CLICKS[:3]))
    assert out["results"] == [[]]
    opened = backend.predict(request(image_server, task={"id": 8, "data": {"image": "unused"}}))
    assert opened["results"] == [[]]


def test_rectangle_and_polygon_output(backend, image_server):
    settings = Settings(allowed_hosts=(image_server,), device="cpu", output="both")
    both = LabelStudioBackend(settings, ResidentPredictor(settings, backend.resident.store), ImageCache())
    out = both.predict(request(image_server, [rect(30, 20, 130, 100)]))
    kinds = sorted({r["type"] for r in out["results"][0]["result"]})
    assert kinds == ["brushlabels", "polygonlabels"]


def test_batch_mode_converts_stored_clicks(backend, image_server):
    task = {
        "id": 9,
        "data": {"image": f"http://{image_server}/ellipse.png"},
        "annotations": [{"id": 1, "result": CLICKS + [kp(10, 10), kp(40, 12), kp(25, 2), kp(24, 30)]}],
    }
    out = backend.predict(request(image_server, task=task))
    assert len([r for r in out["results"][0]["result"] if r["type"] == "brushlabels"]) == 2


@pytest.mark.parametrize(
    "url, message",
    [
        ("http://10.1.2.3/x.png", "not allowed"),
        ("file:///etc/passwd", "scheme"),
        ("/data/upload/1/x.png", "LABEL_STUDIO_URL"),
    ],
)
def test_image_urls_outside_the_allowed_hosts_are_refused(backend, url, message):
    task = {"id": 1, "data": {"image": url}}
    with pytest.raises(InputError, match=message):
        backend.predict(request("unused", CLICKS, task=task))


def test_corrupt_and_missing_images_are_clear_errors(backend, image_server):
    from dextr_backend.errors import DextrError

    with pytest.raises(InputError, match="not a readable image"):
        backend.predict(request(image_server, CLICKS, image="corrupt.png"))
    with pytest.raises(DextrError, match="404"):
        backend.predict(request(image_server, CLICKS, image="missing.png"))


def test_a_newly_promoted_version_is_taken_up_without_restart(backend, image_server):
    backend.predict(request(image_server, CLICKS))
    backend.resident.store.add_version(build_model("lite0").state_dict(), "lite0", name="v-next", make_current=True)
    assert backend.predict(request(image_server, CLICKS))["model_version"] == "v-next"


# ---------------------------------------------------------------- corrective clicks (issue 20)


def test_clicks_after_the_fourth_and_alt_clicks_are_corrections():
    (p,) = prompts_from_results(CLICKS + [kp(90, 60), kp(5, 5, positive=False)])
    prompt = p.prompt()
    np.testing.assert_allclose(prompt.extreme_points, [[30, 60], [130, 62], [80, 20], [82, 100]])
    positives, negatives = prompt.positives, prompt.negatives
    np.testing.assert_allclose(positives, [[90, 60]])
    np.testing.assert_allclose(negatives, [[5, 5]])


def test_a_smart_rectangle_followed_by_clicks_is_one_corrected_object():
    (p,) = prompts_from_results([rect(30, 20, 130, 100), kp(60, 60), kp(10, 10, positive=False)])
    prompt = p.prompt()
    np.testing.assert_allclose(prompt.extreme_points, box_points(p.box, W, H))
    np.testing.assert_allclose(p.box, (30, 20, 130, 100))
    positives, negatives = prompt.positives, prompt.negatives
    np.testing.assert_allclose(positives, [[60, 60]])
    np.testing.assert_allclose(negatives, [[10, 10]])
    # four keypoints of their own stay their own object beside the box
    assert len(prompts_from_results([rect(30, 20, 130, 100)] + CLICKS)) == 2


def corrective_store(tmp_path) -> WeightsStore:
    """A small random ``lite0c``: its corrector is another random network than its base, whose
    probabilities (about 0.527) lie above the threshold where the base's (at most 0.518) do not,
    so a correction changes the mask."""
    torch.manual_seed(1)
    store = WeightsStore(tmp_path / "corrective-store", shipped_dir=tmp_path / "none")
    store.add_version(
        build_model("lite0c").state_dict(), "lite0c", name="corrective", make_current=True, threshold=0.52
    )
    return store


def mask_of(out) -> np.ndarray:
    (brush,) = [r for r in out["results"][0]["result"] if r["type"] == "brushlabels"]
    return brush_to_mask(brush["value"], H, W)


def test_a_negative_keypoint_changes_the_mask_of_a_version_that_takes_corrections(tmp_path, image_server):
    settings = Settings(allowed_hosts=(image_server,), device="cpu")
    backend = LabelStudioBackend(settings, ResidentPredictor(settings, corrective_store(tmp_path)), ImageCache())
    plain = mask_of(backend.predict(request(image_server, CLICKS)))
    corrected = mask_of(backend.predict(request(image_server, CLICKS + [kp(80, 60, positive=False)])))
    assert (plain != corrected).any()
    again = mask_of(backend.predict(request(image_server, CLICKS + [kp(80, 60, positive=False)])))
    assert (again == corrected).all()  # stateless: the same clicks, the same mask


def test_a_version_without_corrections_ignores_them_says_so_and_answers(backend, image_server, caplog):
    plain = mask_of(backend.predict(request(image_server, CLICKS)))
    with caplog.at_level("INFO"):
        ignored = mask_of(backend.predict(request(image_server, CLICKS + [kp(80, 60, positive=False)])))
    assert (plain == ignored).all()
    assert any("take no corrective clicks" in r.getMessage() for r in caplog.records)


def test_percent_of_a_whole_pixel_reads_back_as_that_pixel():
    """100 * 251 / 321 percent used to read back as 250.99999999999997 px, and the crop edge floored
    from it moved a pixel: Label Studio's clicks then differed from CVAT's same clicks."""
    clicks = [kp(x, y, w=321, h=481) for x, y in [(40, 219), (251, 214), (148, 48), (148, 439)]]
    (p,) = prompts_from_results(clicks)
    assert p.prompt().extreme_points.tolist() == [[40, 219], [251, 214], [148, 48], [148, 439]]
