"""Training data from a real Label Studio: brush and polygon regions, fetched through its API."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dextr_backend.data.objects import folder_objects, load_object
from dextr_backend.labelstudio.client import LabelStudioClient, LabelStudioError, is_personal_access_token
from dextr_backend.labelstudio.export import export_labelstudio
from dextr_backend.labelstudio.regions import mask_to_brush, result_regions

CONFIG = """<View>
  <Image name="image" value="$image"/>
  <BrushLabels name="brush" toName="image"><Label value="Box"/></BrushLabels>
  <PolygonLabels name="poly" toName="image"><Label value="Box"/></PolygonLabels>
  <KeyPointLabels name="kp" toName="image" smart="true"><Label value="Box" smart="true"/></KeyPointLabels>
</View>"""

H, W = 90, 120


def shapes():
    image = np.full((H, W, 3), 40, np.uint8)
    brush = np.zeros((H, W), bool)
    brush[10:40, 15:60] = True
    image[brush] = (220, 60, 60)
    poly = np.array([[70, 50], [110, 55], [95, 85]], np.float64)
    poly_mask = np.zeros((H, W), np.uint8)
    cv2.fillPoly(poly_mask, [poly.astype(np.int32)], 1)
    image[poly_mask > 0] = (60, 200, 60)
    return image, brush, poly, poly_mask.astype(bool)


def brush_result(mask, label="Box"):
    return {
        "id": "b1",
        "from_name": "brush",
        "to_name": "image",
        "type": "brushlabels",
        "original_width": W,
        "original_height": H,
        "image_rotation": 0,
        "value": {"format": "rle", "rle": mask_to_brush(mask), "brushlabels": [label]},
    }


def polygon_result(points, label="Box"):
    pct = (points / [W, H] * 100).tolist()
    return {
        "id": "p1",
        "from_name": "poly",
        "to_name": "image",
        "type": "polygonlabels",
        "original_width": W,
        "original_height": H,
        "image_rotation": 0,
        "value": {"points": pct, "polygonlabels": [label]},
    }


def iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def test_regions_from_results_without_a_server():
    _, brush, poly, poly_mask = shapes()
    regions = result_regions([brush_result(brush), polygon_result(poly), {"type": "keypointlabels", "value": {}}])
    assert [r.label for r in regions] == ["Box", "Box"]
    assert np.array_equal(regions[0].mask, brush)
    assert iou(regions[1].mask, poly_mask) > 0.9


def test_personal_access_tokens_are_told_apart_from_legacy_tokens():
    assert not is_personal_access_token("0123456789abcdef0123456789abcdef01234567")
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJ0b2tlbl90eXBlIjoicmVmcmVzaCJ9.c2lnbmF0dXJl"
    assert is_personal_access_token(jwt)


@pytest.mark.labelstudio
def test_export_a_real_label_studio_project(label_studio, tmp_path):
    ls = label_studio
    image, brush, poly, poly_mask = shapes()
    project = ls.api("POST", "/api/projects", {"title": "export test", "label_config": CONFIG})
    pid = project["id"]
    ok, png = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    ls.api("POST", f"/api/projects/{pid}/import", files={"file": ("shapes.png", png.tobytes())})
    ls.api("POST", f"/api/projects/{pid}/import", files={"file": ("unlabeled.png", png.tobytes())})
    tasks = ls.api("GET", f"/api/tasks?project={pid}&fields=all")["tasks"]
    labeled = tasks[0]["id"]
    ls.api("POST", f"/api/tasks/{labeled}/annotations", {"result": [brush_result(brush), polygon_result(poly)]})
    ls.api(
        "POST", f"/api/tasks/{tasks[1]['id']}/annotations", {"result": [brush_result(~brush)], "was_cancelled": True}
    )

    client = LabelStudioClient(ls.url, ls.token)
    folder = export_labelstudio(client, pid, tmp_path / "export")
    refs = folder_objects(folder)
    assert len(refs) == 2  # the skipped task and the unlabeled one give nothing
    masks = [load_object(r)[1] for r in refs]
    got_image = load_object(refs[0])[0]
    assert np.array_equal(got_image, image)  # fetched through /data/upload with the token
    assert any(np.array_equal(m, brush) for m in masks)
    assert max(iou(m, poly_mask) for m in masks) > 0.9


@pytest.mark.labelstudio
def test_a_wrong_token_gets_a_clear_error(label_studio):
    client = LabelStudioClient(label_studio.url, "wrong-token")
    with pytest.raises(LabelStudioError, match="check the API key"):
        list(client.tasks(1))


@pytest.mark.labelstudio
def test_a_personal_access_token_is_exchanged_and_used(label_studio):
    ls = label_studio
    pat = ls.api("POST", "/api/token/", {})["token"]
    assert is_personal_access_token(pat)
    image, *_ = shapes()
    pid = ls.api("POST", "/api/projects", {"title": "pat test", "label_config": CONFIG})["id"]
    ok, png = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    ls.api("POST", f"/api/projects/{pid}/import", files={"file": ("pat.png", png.tobytes())})
    client = LabelStudioClient(ls.url, pat)
    assert client.auth_header()["Authorization"].startswith("Bearer ")
    (task,) = list(client.tasks(pid))
    data = client.fetch(task["data"]["image"])  # /data/upload/... with the Bearer token
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (H, W, 3)


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.floats(0.0, 1.0), st.integers(0, 2**32 - 1))
def test_brush_rle_is_byte_for_byte_the_sdk_s(h, w, density, seed):
    """Our encoder finds runs on the mask, not on the SDK's 4x RGBA copy: the bytes must not change."""
    from label_studio_sdk.converter.brush import decode_rle, mask2rle

    mask = np.random.default_rng(seed).random((h, w)) < density
    mask[: h // 2] = mask[: h // 2].any()  # long runs as well as short ones
    assert mask_to_brush(mask) == mask2rle(mask.astype(np.uint8) * 255)
    assert (np.asarray(decode_rle(mask_to_brush(mask))).reshape(h, w, 4)[:, :, 3] > 127).tolist() == mask.tolist()


def test_brush_rle_of_runs_past_the_longest_field():
    """Runs longer than 2^16 values are split as the SDK splits them."""
    from label_studio_sdk.converter.brush import mask2rle

    for mask in (np.ones((300, 400), bool), np.pad(np.ones((200, 300), bool), 60)):
        assert mask_to_brush(mask) == mask2rle(mask.astype(np.uint8) * 255)
