"""The tool-neutral seam (service/segmentation.py): items in, masks out, the same in-process and as
a queue job; the job carries plain data only and is checked again by the worker."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_labelstudio_backend import CLICKS, CONFIG

from dextr_backend.build import make_predictor
from dextr_backend.errors import InputError
from dextr_backend.labelstudio.requests import parse_request, work
from dextr_backend.models import build_model
from dextr_backend.service.prompts import Prompt
from dextr_backend.service.segmentation import (
    ImageRef,
    LocalSegmenter,
    SegmentItem,
    in_frame,
    job_payload,
    pack_mask,
    run_job,
    segments_from_job,
    unpack_mask,
)


class Pictures:
    """An image source holding pictures by URL; counts what it is asked for."""

    def __init__(self, **images):
        self.images, self.asked = images, []

    def get(self, ref: ImageRef, deadline: float) -> np.ndarray:
        self.asked.append(ref)
        return self.images[ref.url]


class Pinned:
    def __init__(self, predictor):
        self.predictor = predictor

    def get(self):
        return self.predictor


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    return make_predictor(build_model("lite0"), "lite0", 384, threshold=0.5, device="cpu", version="random")


def ellipse() -> np.ndarray:
    import cv2

    img = np.full((120, 160, 3), 30, np.uint8)
    cv2.ellipse(img, (80, 60), (50, 40), 0, 0, 360, (40, 40, 230), -1)
    return img


def item(url="a", frame=(160, 120)) -> SegmentItem:
    prompt = Prompt(np.array([[30.0, 60], [130, 62], [80, 20], [82, 100]]), np.zeros((0, 2)), np.zeros((0, 2)))
    return SegmentItem(ImageRef(url, 3), prompt, frame)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(0, 2**32 - 1))
def test_a_packed_mask_unpacks_to_itself(h, w, seed):
    mask = np.random.default_rng(seed).random((h, w)) > 0.5
    np.testing.assert_array_equal(unpack_mask(pack_mask(mask)), mask)


def test_a_job_carries_plain_data_only_and_is_answered_like_this_process(predictor):
    body = {
        "tasks": [{"id": 1, "data": {"image": "http://pictures.example/a.png"}}],
        "project": "3.17",
        "label_config": CONFIG,
        "params": {"context": {"result": CLICKS}},
        "access_token": "secret-token",
    }
    items = [w.item for w in work(parse_request(body))]
    payload = job_payload(items, time.monotonic() + 30)
    text = json.dumps(payload)
    assert "secret-token" not in text and "label_config" not in text and "tasks" not in text
    assert set(payload) == {"items", "deadline"}
    assert payload["items"][0]["url"] == "http://pictures.example/a.png" and payload["items"][0]["project"] == 3

    pictures = Pictures(**{"http://pictures.example/a.png": ellipse()})
    answered = segments_from_job(run_job(payload, predictor, pictures, 30.0))
    local = LocalSegmenter(Pinned(predictor), pictures, 30.0).segment(items, time.monotonic() + 30)
    assert answered.version == local.version == "random"
    (queued,), (here,) = list(answered.masks), list(local.masks)
    np.testing.assert_array_equal(queued.mask, here.mask)
    assert abs(queued.score - here.score) < 1e-5


@pytest.mark.parametrize(
    "change",
    [
        {"points": [[1, 2]]},  # not four extreme points
        {"points": [[1, 2], [3, 4], [5, float("nan")], [7, 8]]},
        {"frame": [0, 10]},
        {"url": 7},
        {"project": "3; DROP"},
        {"project": True},
    ],
)
def test_a_worker_refuses_a_malformed_item(change, predictor):
    good = item().to_json()
    with pytest.raises(InputError, match="malformed"):
        run_job({"items": [{**good, **change}]}, predictor, Pictures(a=ellipse()), 30.0)
    with pytest.raises(InputError, match="items"):
        run_job({"tasks": []}, predictor, Pictures(), 30.0)


def test_a_prompt_measured_in_another_frame_is_moved_to_the_decoded_picture():
    """Label Studio measured 320x240, the picture decoded at 160x120 (e.g. EXIF rotation aside)."""
    prompt = Prompt(np.array([[0.0, 0], [319, 239], [100, 50], [200, 100]]), np.array([[319.0, 10]]), np.zeros((0, 2)))
    moved = in_frame(prompt, (320, 240), 160, 120)
    np.testing.assert_allclose(moved.extreme_points, [[0, 0], [159, 119], [50, 25], [100, 50]])
    np.testing.assert_allclose(moved.positives, [[159, 5]])
    assert in_frame(prompt, (320, 240), 320, 240) is prompt


def test_masks_are_made_as_they_are_read(predictor):
    """A request of many objects never holds all of its masks: the second is not computed before
    the first is read."""
    pictures = Pictures(a=ellipse())
    segments = LocalSegmenter(Pinned(predictor), pictures, 30.0).segment([item(), item()], time.monotonic() + 30)
    assert pictures.asked == []
    next(segments.masks)
    assert len(pictures.asked) == 1


def test_the_objects_of_one_picture_ask_for_it_once(predictor):
    """Several objects of one task's picture: one ask (and one connection lookup) per run of them,
    not one per object; a picture that comes back later is asked for again (only the last is held)."""
    pictures = Pictures(a=ellipse(), b=ellipse())
    items = [item("a"), item("a"), item("a"), item("b"), item("a")]
    segments = LocalSegmenter(Pinned(predictor), pictures, 30.0).segment(items, time.monotonic() + 30)
    assert len(list(segments.masks)) == 5
    assert [ref.url for ref in pictures.asked] == ["a", "b", "a"]


def test_past_its_deadline_a_request_ends_with_a_timeout(predictor):
    from dextr_backend.errors import ServiceTimeout

    segments = LocalSegmenter(Pinned(predictor), Pictures(a=ellipse()), 30.0).segment([item()], time.monotonic() - 1)
    with pytest.raises(ServiceTimeout, match="DEXTR_PREDICT_TIMEOUT"):
        list(segments.masks)
