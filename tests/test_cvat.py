"""CVAT: the native interaction function (through cvat-sdk's and cvat-cli's own types) and the
nuclio function (``handler(context, event)`` with nuclio-shaped objects), on real GrabCut images.

Quality checks need the shipped default weights and ``../shared/data``; they skip otherwise.
Prompt handling and bad input are checked with a stand-in predictor, so they always run.
"""

from __future__ import annotations

import base64
import json
import types
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("cvat_sdk", reason="cvat-sdk not installed (pip install 'dextr-backend[cvat]')")

import cvat_sdk.auto_annotation as cvataa  # noqa: E402
import PIL.Image  # noqa: E402
from cvat_sdk.masks import decode_mask  # noqa: E402

from dextr_backend.cvat import native, nuclio  # noqa: E402
from dextr_backend.cvat.prompts import cvat_prompt  # noqa: E402
from dextr_backend.errors import InputError  # noqa: E402
from dextr_backend.evaluation.metrics import iou  # noqa: E402
from dextr_backend.geometry import extreme_points  # noqa: E402
from dextr_backend.predictor import Prediction  # noqa: E402
from dextr_backend.service import resident  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
NATIVE_FILE = REPO / "dextr_backend" / "cvat" / "native.py"
NUCLIO_MAIN = REPO / "docker" / "nuclio" / "dextr" / "main.py"
STEMS = ("106024", "227092", "21077")  # three GrabCut objects, as in test_e2e_labelstudio


# --------------------------------------------------------------------------- helpers
class Prompts(cvataa.InteractionPrompts):
    """The SDK's abstract prompts, filled in (the agent's own class is private to cvat-cli)."""

    def __init__(self, pos=(), neg=(), box=None):
        self._pos = tuple(tuple(map(float, p)) for p in pos)
        self._neg = tuple(tuple(map(float, p)) for p in neg)
        self._box = None if box is None else tuple(tuple(map(float, c)) for c in box)

    @property
    def pos_points(self):
        return self._pos

    @property
    def neg_points(self):
        return self._neg

    @property
    def bounding_box(self):
        return self._box


class Context(cvataa.InteractionFunctionContext):
    pass


class FakePredictor:
    """A filled rectangle spanned by the points as the mask; remembers the points it got."""

    version, device, batch_size = "fake", "cpu", 1

    def __init__(self):
        self.calls, self.corrections = [], []

    def predict_batch(self, items):
        return [self.predict(*item) for item in items]

    def predict(self, image, points, positives=(), negatives=()):
        points = np.asarray(points, dtype=np.float64)
        self.calls.append(points)
        self.corrections.append(
            (
                np.asarray(positives, dtype=np.float64).reshape(-1, 2).tolist(),
                np.asarray(negatives, dtype=np.float64).reshape(-1, 2).tolist(),
            )
        )
        mask = np.zeros(image.shape[:2], bool)
        (x0, y0), (x1, y1) = points.min(0).astype(int), points.max(0).astype(int)
        mask[y0 : y1 + 1, x0 : x1 + 1] = True
        return Prediction(mask=mask, probabilities=mask.astype(np.float32), score=0.75, points=points)


def grabcut(shared_data, stem):
    root = shared_data / "GrabCut"
    image = cv2.cvtColor(cv2.imread(str(root / "data_GT" / f"{stem}.jpg")), cv2.COLOR_BGR2RGB)
    raw = cv2.imread(str(root / "boundary_GT" / f"{stem}.bmp"), cv2.IMREAD_GRAYSCALE)
    return image, raw > 128, (raw > 0) & (raw < 255)  # picture, object, unknown band


def box_of(mask):
    ys, xs = np.nonzero(mask)
    return (xs.min(), ys.min()), (xs.max(), ys.max())


def decoded(shapes, image):
    assert len(shapes) == 1 and shapes[0].type == "mask"
    return decode_mask(shapes[0].points, image_width=image.shape[1], image_height=image.shape[0])


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    """The shipped default weights on the CPU, with a private empty user store."""
    from dextr_backend.build import build_predictor
    from dextr_backend.weights.store import WeightsStore

    store = WeightsStore(tmp_path_factory.mktemp("cvat-weights"))
    if store.current_name() is None:
        pytest.skip(
            "no shipped default weights yet (weights/index.json has no 'default'): "
            "the quality checks need the trained model"
        )
    return build_predictor(store=store, device="cpu")


@pytest.fixture()
def fake_native():
    fake = FakePredictor()
    resident.use(resident.PinnedPredictor(fake))
    yield fake
    resident.use(None)


@pytest.fixture()
def real_native(predictor):
    resident.use(resident.PinnedPredictor(predictor))
    yield predictor
    resident.use(None)


# --------------------------------------------------------------------------- native function
def test_native_module_loads_through_cvat_cli():
    """``--function-file`` loads the file under another name; the agent picks the interactor driver."""
    common = pytest.importorskip("cvat_cli._internal.common", reason="cvat-cli not installed")
    agent = pytest.importorskip("cvat_cli._internal.agent", reason="cvat-cli not installed")
    function = common.FunctionLoader(None, NATIVE_FILE, {}).load()
    assert isinstance(function.spec, cvataa.InteractionFunctionSpec)
    driver = agent.get_function_driver_class(function.spec)
    assert driver.FUNCTION_KIND == "interactor"
    fields = driver.get_remote_function_fields(function.spec)
    # a box alone is allowed, and negative points are offered (they correct the mask)
    assert fields == {"min_pos_points": 0, "min_neg_points": 0, "startswith_box_optional": True}
    assert callable(function.detect) and callable(function.preprocess_image)
    by_module = common.FunctionLoader("dextr_backend.cvat.native", None, {}).load()
    assert by_module.spec == function.spec


def test_native_spec():
    assert native.spec.min_neg_points == 0  # CVAT's UI offers negative clicks
    assert native.spec.min_bounding_boxes == 0  # a box is optional
    assert native.spec.min_pos_points == 0  # so that a box alone reaches detect


def test_native_corrections_reach_the_predictor(fake_native):
    """Positive points after the fourth and every negative point are corrective clicks."""
    image = np.zeros((60, 80, 3), np.uint8)
    clicks = [(5, 30), (79, 31), (40, 2), (41, 59)]
    native.detect(Context(), image, Prompts(pos=clicks + [(30, 30)], neg=[(60, 10), (61, 12)]))
    np.testing.assert_array_equal(fake_native.calls[-1], clicks)
    assert fake_native.corrections[-1] == ([[30, 30]], [[60, 10], [61, 12]])
    # with a box standing in, negatives still correct
    native.detect(Context(), image, Prompts(neg=[(12, 22)], box=[(10, 20), (50, 40)]))
    assert fake_native.corrections[-1] == ([], [[12, 22]])
    with pytest.raises(InputError, match="negative point"):
        native.detect(Context(), image, Prompts(pos=clicks, neg=[(500, 1)]))


def test_preprocess_image_is_a_readonly_rgb_array():
    gray = PIL.Image.fromarray(np.arange(12, dtype=np.uint8).reshape(3, 4), mode="L")
    arr = native.preprocess_image(Context(), gray)
    assert arr.shape == (3, 4, 3) and arr.dtype == np.uint8 and not arr.flags.writeable
    rgba = PIL.Image.new("RGBA", (5, 2), (10, 20, 30, 40))
    assert native.preprocess_image(Context(), rgba)[0, 0].tolist() == [10, 20, 30]


def test_native_prompt_rules(fake_native):
    image = np.zeros((60, 80, 3), np.uint8)
    ctx = Context()
    # fewer than four clicks and no box: nothing yet, and the model is not run
    assert native.detect(ctx, image, Prompts(pos=[(10, 10), (20, 20), (30, 30)])) == []
    assert fake_native.calls == []
    # four clicks are the extreme points, exactly; one on the far edge (x == W) is pulled in
    clicks = [(5, 30), (80, 31), (40, 2), (41, 59)]
    shapes = native.detect(ctx, image, Prompts(pos=clicks))
    np.testing.assert_array_equal(fake_native.calls[-1], [[5, 30], [79, 31], [40, 2], [41, 59]])
    assert shapes[0].attributes[0].spec_id == cvataa.InteractionResultAttributes.CONFIDENCE
    assert float(shapes[0].attributes[0].value) == pytest.approx(0.75)
    # a box alone: its side midpoints (left, right, top, bottom)
    native.detect(ctx, image, Prompts(box=[(10, 20), (50, 40)]))
    np.testing.assert_array_equal(fake_native.calls[-1], [[10, 30], [50, 30], [30, 20], [30, 40]])
    # a box and a click: the box's midpoints stay the extreme points, the click corrects (as in
    # Label Studio: one rule for every tool)
    native.detect(ctx, image, Prompts(pos=[(22, 21)], box=[(10, 20), (50, 40)]))
    np.testing.assert_array_equal(fake_native.calls[-1], [[10, 30], [50, 30], [30, 20], [30, 40]])
    assert fake_native.corrections[-1] == ([[22, 21]], [])
    # a PIL image works without preprocess_image too
    native.detect(ctx, PIL.Image.fromarray(image), Prompts(pos=clicks))
    with pytest.raises(InputError, match="outside"):
        native.detect(ctx, image, Prompts(pos=[(5, 30), (95, 31), (40, 2), (41, 59)]))


def test_native_empty_mask_gives_no_shape():
    class Empty(FakePredictor):
        def predict(self, image, points, positives=(), negatives=()):
            pred = super().predict(image, points)
            pred.mask[:] = False
            return pred

    resident.use(resident.PinnedPredictor(Empty()))
    try:
        assert native.detect(Context(), np.zeros((20, 20, 3), np.uint8), Prompts(box=[(2, 2), (15, 15)])) == []
    finally:
        resident.use(None)


def test_native_on_grabcut(shared_data, real_native):
    """The decoded CVAT mask is the predictor's mask, and it matches the ground truth."""
    scores = []
    for stem in STEMS:
        image, gt, unknown = grabcut(shared_data, stem)
        pp = native.preprocess_image(Context(), PIL.Image.fromarray(image))
        points = extreme_points(gt)
        mask = decoded(native.detect(Context(), pp, Prompts(pos=points.tolist())), image)
        np.testing.assert_array_equal(mask, real_native.predict(image, points).mask)
        scores.append(iou(mask, gt, unknown))
    assert np.mean(scores) > 0.8, f"IoU per object {dict(zip(STEMS, np.round(scores, 3)))}"


def test_native_negative_point_corrects_the_default_on_grabcut(shared_data, real_native):
    """A CVAT negative point where the default's four-point mask covers background changes the mask
    and brings it closer to the ground truth (the shipped default takes corrections)."""
    from dextr_backend.evaluation.clicks import next_click

    image, gt, unknown = grabcut(shared_data, "271008")
    pp = native.preprocess_image(Context(), PIL.Image.fromarray(image))
    points = extreme_points(gt).tolist()
    first = decoded(native.detect(Context(), pp, Prompts(pos=points)), image)
    click = next_click(first, gt, unknown)
    assert click is not None and not click.positive
    fixed = decoded(native.detect(Context(), pp, Prompts(pos=points, neg=[(click.x, click.y)])), image)
    assert not np.array_equal(fixed, first)
    assert iou(fixed, gt, unknown) > iou(first, gt, unknown) + 0.02


def test_native_box_only_on_grabcut(shared_data, real_native):
    image, gt, unknown = grabcut(shared_data, STEMS[0])
    mask = decoded(
        native.detect(
            Context(), native.preprocess_image(Context(), PIL.Image.fromarray(image)), Prompts(box=box_of(gt))
        ),
        image,
    )
    assert mask.sum() > 0.2 * gt.sum()
    assert iou(mask, gt, unknown) > 0.5


def test_native_loads_weights_from_environment(predictor, weights_dir, monkeypatch):
    """The process singleton: ``$DEXTR_WEIGHTS`` (default current), ``$DEXTR_DEVICE``, built once."""
    monkeypatch.setenv("DEXTR_DEVICE", "cpu")
    monkeypatch.delenv("DEXTR_WEIGHTS", raising=False)
    resident.use(None)
    try:
        first = resident.shared().get()
        assert first.version == predictor.version and first.device.type == "cpu"
        assert resident.shared().get() is first
    finally:
        resident.use(None)


# --------------------------------------------------------------------------- nuclio function
class Logger:
    def __init__(self):
        self.lines = []

    def _log(self, level):
        return lambda message, *args, **kwargs: self.lines.append((level, message))

    def __getattr__(self, level):
        if level in ("debug", "info", "warn", "warning", "error"):
            return self._log(level)
        raise AttributeError(level)


class Response:
    def __init__(self, body=None, headers=None, content_type=None, status_code=200):
        self.body, self.headers, self.content_type, self.status_code = body, headers, content_type, status_code


def nuclio_context(predictor):
    context = types.SimpleNamespace(logger=Logger(), user_data=types.SimpleNamespace(), Response=Response)
    nuclio.init_context(context, predictor=predictor)
    return context


def encoded(image, ext=".jpg"):
    ok, buf = cv2.imencode(ext, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert ok
    return base64.b64encode(buf.tobytes()).decode("ascii")


def call(context, body):
    raw = body if isinstance(body, (bytes, dict)) else json.dumps(body).encode()
    response = nuclio.handler(context, types.SimpleNamespace(body=raw))
    assert response.content_type == "application/json" and response.headers == {}
    return response.status_code, json.loads(response.body)


def load_main():
    import importlib.util

    spec = importlib.util.spec_from_file_location("nuclio_main", NUCLIO_MAIN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_nuclio_main_is_a_shim():
    main = load_main()
    assert main.handler is nuclio.handler and main.init_context is nuclio.init_context


def test_nuclio_answers_with_a_full_frame_mask(monkeypatch):
    image = np.full((40, 60, 3), 90, np.uint8)
    context = nuclio_context(FakePredictor())
    body = {
        "image": encoded(image, ".png"),
        "pos_points": [[10, 20], [50, 21], [30, 5], [31, 35]],
        "neg_points": [[1, 1]],
        "obj_bbox": None,
        "threshold": 0.5,
    }
    status, answer = call(context, body)
    assert status == 200
    mask = np.array(answer["mask"])
    assert mask.shape == (40, 60) and set(np.unique(mask)) == {0, 1}
    assert mask[20, 30] == 1 and mask[0, 0] == 0
    outline = np.array(answer["points"])
    assert outline.ndim == 2 and outline.shape[1] == 2 and len(outline) >= 4
    # a dict body (nuclio decodes JSON itself for application/json) and a box alone work too
    status, answer = call(context, {"image": body["image"], "pos_points": [], "obj_bbox": [[10, 5], [50, 35]]})
    assert status == 200 and np.array(answer["mask"])[20, 30] == 1
    # the decoded frame is cached across clicks: a frame that would not decode is not decoded again
    monkeypatch.setattr(nuclio, "decode_image", lambda *a, **kw: pytest.fail("decoded the frame again"))
    status, _ = call(context, body)
    assert status == 200


def test_nuclio_corrections_reach_the_predictor():
    image = np.full((40, 60, 3), 90, np.uint8)
    fake = FakePredictor()
    context = nuclio_context(fake)
    status, _ = call(
        context,
        {
            "image": encoded(image, ".png"),
            "neg_points": [[3, 4]],
            "pos_points": [[10, 20], [50, 21], [30, 5], [31, 35], [20, 20]],
        },
    )
    assert status == 200
    np.testing.assert_array_equal(fake.calls[-1], [[10, 20], [50, 21], [30, 5], [31, 35]])
    assert fake.corrections[-1] == ([[20, 20]], [[3, 4]])


def test_nuclio_mask_json_is_json():
    mask = np.random.default_rng(0).random((7, 5)) > 0.5
    assert json.loads(nuclio.mask_json(mask)) == mask.astype(int).tolist()
    assert json.loads(nuclio.mask_json(np.ones((1, 1), bool))) == [[1]]


@pytest.mark.parametrize(
    "body, message",
    [
        (b"not json at all", "not valid JSON"),
        (b"", "empty"),
        (b"\xff\xfe\x00", "not valid JSON"),
        (b'{"image": "PNG", "pos_points": [[NaN, 1], [1, 2], [3, 4], [5, 6]]}', "NaN is not JSON"),
        (b'{"image": "PNG", "pos_points": ' + b"[" * 100 + b"]" * 100 + b"}", "deeper than 64 levels"),
        ({"image": "PNG", "pos_points": [], "note": "x" * (1024 * 1024 + 1)}, "DEXTR_MAX_STRING_KB"),
        (b"[1, 2, 3]", "JSON object"),
        ({"pos_points": [[1, 1], [2, 2], [3, 3], [4, 4]]}, "'image' is missing"),
        ({"image": 42, "pos_points": []}, "'image' is missing"),
        ({"image": "%%% not base64 %%%", "pos_points": []}, "not valid base64"),
        ({"image": base64.b64encode(b"GIF89a but not really").decode(), "pos_points": []}, "not a readable image"),
        ({"image": "PNG", "pos_points": [[1, 1], [5, 5], [2, 9]]}, "at least 4 positive points"),
        ({"image": "PNG", "pos_points": [[1, 1], [5, 5], [2, 9], [200, 3]]}, "outside the 60x40 image"),
        ({"image": "PNG", "pos_points": [[1, 1], [5, 5], [2, 9], [3, -7]]}, "outside"),
        ({"image": "PNG", "pos_points": "1,2 3,4"}, "list of"),
        ({"image": "PNG", "pos_points": [[1, 2, 3]]}, "pairs"),
        ({"image": "PNG", "pos_points": [[1, "a"], [1, 2], [3, 4], [5, 6]]}, "pairs"),
        ({"image": "PNG", "pos_points": [], "obj_bbox": [[1, 2]]}, "box"),
        ({"image": "PNG", "pos_points": [], "obj_bbox": [[300, 300], [400, 400]]}, "outside"),
        ({"image": "PNG", "pos_points": [], "neg_points": [[500, 1]], "obj_bbox": [[1, 1], [9, 9]]}, "outside"),
    ],
)
def test_nuclio_bad_input_is_4xx(body, message):
    """400 for a body that is not a JSON object, 422 for bad content: the server's table."""
    fake = FakePredictor()
    context = nuclio_context(fake)
    if isinstance(body, dict) and body.get("image") == "PNG":
        body = {**body, "image": encoded(np.zeros((40, 60, 3), np.uint8), ".png")}
    status, answer = call(context, body)
    assert status == (
        400
        if message in ("not valid JSON", "NaN is not JSON", "deeper than 64 levels", "empty", "JSON object")
        else 422
    ), answer
    assert message in answer["error"]
    assert fake.calls == []


def test_nuclio_bug_is_500_not_a_crash():
    class Broken(FakePredictor):
        def predict(self, image, points, positives=(), negatives=()):
            raise RuntimeError("boom")

    context = nuclio_context(Broken())
    status, answer = call(
        context,
        {"image": encoded(np.zeros((20, 20, 3), np.uint8), ".png"), "pos_points": [[1, 1], [18, 2], [9, 0], [9, 19]]},
    )
    assert status == 500 and "boom" not in answer["error"]
    assert any(level == "error" and "boom" in line for level, line in context.logger.lines)


def test_nuclio_on_grabcut(shared_data, predictor):
    context = nuclio_context(predictor)
    for stem, ext in zip(STEMS, (".jpg", ".png", ".jpg")):
        image, gt, unknown = grabcut(shared_data, stem)
        sent = cv2.cvtColor(
            cv2.imdecode(np.frombuffer(base64.b64decode(encoded(image, ext)), np.uint8), cv2.IMREAD_COLOR),
            cv2.COLOR_BGR2RGB,
        )
        points = extreme_points(gt)
        status, answer = call(
            context, {"image": encoded(image, ext), "pos_points": points.tolist(), "neg_points": [], "obj_bbox": None}
        )
        assert status == 200
        mask = np.array(answer["mask"], dtype=bool)
        assert mask.shape == gt.shape
        np.testing.assert_array_equal(mask, predictor.predict(sent, points).mask)
        assert iou(mask, gt, unknown) > 0.5
    # the same photo, as CVAT sends it for each further click, with a box alone
    image, gt, unknown = grabcut(shared_data, STEMS[0])
    (x0, y0), (x1, y1) = box_of(gt)
    status, answer = call(
        context,
        {
            "image": encoded(image),
            "pos_points": [],
            "neg_points": [],
            "obj_bbox": [[int(x0), int(y0)], [int(x1), int(y1)]],
        },
    )
    assert status == 200 and np.array(answer["mask"]).sum() > 0.2 * gt.sum()


def test_prompt_rule_helpers():
    assert cvat_prompt([], [], None, 10, 10) is None
    assert cvat_prompt(None, None, [], 10, 10) is None
    np.testing.assert_array_equal(
        cvat_prompt([], [], [8, 8, 2, 2], 10, 10).extreme_points, [[2, 5], [8, 5], [5, 2], [5, 8]]
    )  # corners in any order
    with pytest.raises(InputError, match="width and height"):
        cvat_prompt([], [], [[2, 2], [2, 8]], 10, 10)
    with pytest.raises(InputError, match="finite"):
        cvat_prompt([[1, float("nan")]] * 4, [], None, 10, 10)
