"""The training-free correctors (f-BRS-B, the local graph cut) and click consistency, on the shipped
network and synthetic scenes where the right answer is known: a blue block wrongly taken with a red
disc, and a thin blue tail the network leaves out."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from dextr_backend.build import build_predictor
from dextr_backend.correctors import CorrectionJob, choose_corrector, make_consistent, parse_method
from dextr_backend.errors import InputError
from dextr_backend.models import build_model

DISC_CENTRE, DISC_RADIUS = (130, 120), 60


def disc_scene(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.full((240, 320, 3), 200, np.uint8) + rng.integers(0, 20, (240, 320, 3)).astype(np.uint8)
    cv2.circle(image, DISC_CENTRE, DISC_RADIUS, (200, 30, 30), -1)
    return image


def region(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    out = np.zeros((240, 320), bool)
    out[y0:y1, x0:x1] = True
    return out


def disc_inside() -> np.ndarray:
    out = np.zeros((240, 320), np.uint8)
    cv2.circle(out, DISC_CENTRE, DISC_RADIUS - 5, 1, -1)
    return out.astype(bool)


@pytest.fixture(scope="module", params=["fbrs", "graphcut"])
def predictor(request):
    return build_predictor("bsds-lite0-v3.2", device="cpu", corrector=request.param)


def test_a_negative_click_removes_a_wrongly_included_block(predictor):
    image = disc_scene()
    cv2.rectangle(image, (185, 95), (260, 145), (30, 30, 200), -1)  # a blue block touching the disc
    points = [[70, 120], [260, 120], [130, 60], [130, 180]]  # the union's extreme points
    block = region(100, 141, 200, 256)
    before = predictor.predict(image, points)
    after = predictor.predict(image, points, negatives=[[225, 120]])
    assert before.mask[block].mean() > 0.9, "the scene must start with the block wrongly included"
    assert after.corrections == 1
    assert after.mask[block].mean() < 0.75 * before.mask[block].mean()
    # f-BRS rescales features for the whole crop, so some of the disc may go with the block.
    assert after.mask[disc_inside()].mean() > 0.75, "the disc itself must stay"


def test_a_positive_click_adds_a_missed_tail(predictor):
    image = disc_scene()
    cv2.rectangle(image, (185, 113), (280, 127), (30, 30, 200), -1)  # a thin blue tail
    points = [[70, 120], [280, 120], [130, 60], [130, 180]]
    tail = region(114, 127, 200, 270)
    before = predictor.predict(image, points)
    after = predictor.predict(image, points, positives=[[235, 120]])
    assert before.mask[tail].mean() < 0.05, "the scene must start with the tail missed"
    assert after.mask[tail].mean() > 0.5
    assert after.mask[disc_inside()].mean() > 0.97


def test_the_same_clicks_give_the_same_mask(predictor):
    image = disc_scene()
    cv2.rectangle(image, (185, 95), (260, 145), (30, 30, 200), -1)
    points = [[70, 120], [260, 120], [130, 60], [130, 180]]
    first = predictor.predict(image, points, negatives=[[225, 120]])
    again = predictor.predict(image, points, negatives=[[225, 120]])
    assert np.array_equal(first.mask, again.mask)


def test_click_consistency_puts_every_clicked_pixel_on_its_side():
    previous = np.zeros((64, 64), np.float32)
    previous[10:40, 10:40] = 0.95
    job = CorrectionJob(
        np.zeros((64, 64, 4), np.float32),
        previous,
        positives=np.array([[50.0, 50.0]]),
        negatives=np.array([[20.0, 20.0]]),
    )
    out = make_consistent(previous, job, threshold=0.7)
    assert out[50, 50] > 0.7 and out[20, 20] <= 0.7
    assert out[30, 30] == previous[30, 30] and out[5, 60] == previous[5, 60], "only the clicks' discs change"


def test_consistent_corrector_satisfies_the_clicked_pixel_through_the_predictor():
    predictor = build_predictor("bsds-lite0-v3.2", device="cpu", corrector="fbrs+consistent")
    image = disc_scene()
    points = [[70, 120], [190, 120], [130, 60], [130, 180]]
    out = predictor.predict(image, points, negatives=[[130, 120]], positives=[[230, 30]])
    assert not out.mask[120, 130]
    assert predictor.corrector_name == "fbrs+consistent"


def test_corrector_names_are_checked_against_the_network():
    assert parse_method("graphcut+consistent") == ("graphcut", "consistent")
    assert parse_method("network+graphcut") == ("network", "graphcut")
    for bad in ("magic", "consistent", "graphcut+network", "consistent+fbrs", "fbrs+fbrs"):
        with pytest.raises(ValueError, match="unknown corrector"):
            parse_method(bad)
    lite = build_model("lite0")
    assert choose_corrector(None, False, lite) == ()
    assert choose_corrector("auto", True, lite) == ("network",)
    assert choose_corrector("none", True, lite) == ()
    with pytest.raises(InputError, match="takes corrections"):
        choose_corrector("network", False, lite)
    with torch.device("meta"):
        official = build_model("resnet101")
    with pytest.raises(InputError, match="light"):
        choose_corrector("fbrs", False, official)
    assert choose_corrector("graphcut", False, official) == ("graphcut",)


def test_the_shipped_default_corrects_a_real_object(shared_data, weights_dir):
    """The default version takes corrections: on a GrabCut picture whose four-click mask covers some
    background, the protocol's next click (negative) changes the mask and raises its IoU."""
    from dextr_backend.data.benchmarks import load_dataset
    from dextr_backend.evaluation.clicks import next_click
    from dextr_backend.evaluation.metrics import iou
    from dextr_backend.geometry import extreme_points
    from dextr_backend.imageio import read_image

    predictor = build_predictor(device="cpu")
    assert predictor.corrections, f"the default {predictor.version} takes no corrections"
    obj = next(o for o in load_dataset(shared_data / "GrabCut") if o.object_id == "271008")
    image, gt, ignore = read_image(obj.image_path), np.asarray(obj.mask, bool), np.asarray(obj.ignore, bool)
    points = extreme_points(gt)
    first = predictor.predict(image, points)
    click = next_click(first.mask, gt, ignore)
    assert click is not None and not click.positive
    fixed = predictor.predict(image, points, negatives=[(click.x, click.y)])
    assert fixed.corrections == 1 and not np.array_equal(fixed.mask, first.mask)
    assert iou(fixed.mask, gt, ignore) > iou(first.mask, gt, ignore) + 0.02
