"""`dextr-backend evaluate`: dataset readers, IoU, GrabCut baseline, runner, report and CLI.

Everything runs on tiny synthetic benchmark folders written to tmp_path in each public layout,
plus one check of the reader and baseline on the real GrabCut set where it is present.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dextr_backend.data.benchmarks import EvalObject, decode_objects, load_dataset
from dextr_backend.errors import InputError
from dextr_backend.evaluation import evaluate_objects, grabcut_baseline, iou, mean_iou, write_report
from dextr_backend.models import build_model
from dextr_backend.predictor import DextrPredictor

S = 64


# --------------------------------------------------------------------------- synthetic data


def _scene(seed: int, center=(32, 32), radius=14, size=S) -> tuple[np.ndarray, np.ndarray]:
    """A noisy green-gray picture with a red disc; returns RGB image and the disc's bool mask."""
    rng = np.random.default_rng(seed)
    img = np.clip(rng.normal(110, 12, (size, size, 3)), 0, 255).astype(np.uint8)
    img[..., 1] = np.clip(img[..., 1].astype(int) + 40, 0, 255)
    mask = np.zeros((size, size), np.uint8)
    cv2.circle(mask, center, radius, 1, -1)
    img[mask > 0] = (220, 30, 30)
    return img, mask.astype(bool)


def _write(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    out = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR) if arr.ndim == 3 else arr
    assert cv2.imwrite(str(path), out)


def _grow(mask: np.ndarray) -> np.ndarray:
    return cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0


def make_grabcut(root: Path) -> dict[str, np.ndarray]:
    """GrabCut layout: data_GT/*.jpg|bmp, boundary_GT/*.bmp with 255 object and a 128 band."""
    truth = {}
    for i, (stem, ext) in enumerate([("a1", ".jpg"), ("b2", ".bmp"), ("c3", ".JPG")]):
        img, mask = _scene(i, center=(28 + 4 * i, 32))
        _write(root / "data_GT" / f"{stem}{ext}", img)
        band = cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        gt = np.where(band, 128, 0).astype(np.uint8)
        gt[cv2.erode(mask.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0] = 255
        _write(root / "boundary_GT" / f"{stem}.bmp", gt)
        truth[stem] = gt
    return truth


def make_berkeley(root: Path) -> None:
    """Berkeley layout: images/*.jpg, masks/*.png as RGB 0/255 with a faint anti-aliased rim."""
    for i in range(2):
        img, mask = _scene(10 + i)
        _write(root / "images" / f"{100 + i}.jpg", img)
        rgb = np.zeros((S, S, 3), np.uint8)
        rgb[mask] = 255
        rgb[_grow(mask) & ~mask] = 90  # below 128: background by the Berkeley rule
        _write(root / "masks" / f"{100 + i}.png", rgb)


def make_davis(root: Path) -> None:
    """DAVIS layout: img/NNN.jpg, gt/NNN.png: object stored as 128 with a rim of 3 (both count)."""
    for i in range(2):
        img, mask = _scene(20 + i)
        _write(root / "img" / f"{i:03d}.jpg", img)
        gt = np.zeros((S, S, 3), np.uint8)
        gt[_grow(mask)] = (0, 3, 0)
        gt[mask] = (128, 0, 0)
        _write(root / "gt" / f"{i:03d}.png", gt)


def make_mval(root: Path) -> None:
    """COCO-MVal layout: img/<id>.jpg, gt/<class><k>_<id>.png, one file per object."""
    img, left = _scene(30, center=(18, 32), radius=10)
    right = np.zeros((S, S), np.uint8)
    cv2.rectangle(right, (38, 20), (56, 44), 255, -1)
    _write(root / "img" / "000042.jpg", img)
    _write(root / "gt" / "cat1_000042.png", left.astype(np.uint8) * 255)
    _write(root / "gt" / "dog2_000042.png", right)
    _write(root / "gt" / "cat1_999999.png", right)  # no such picture: ignored with a warning


# --------------------------------------------------------------------------- datasets


def test_grabcut_layout_reads_band_as_ignore(tmp_path):
    truth = make_grabcut(tmp_path)
    ds = load_dataset(tmp_path)
    assert ds.mask_format == "grabcut" and ds.images_dir.name == "data_GT"
    objs = list(ds)
    assert [o.object_id for o in objs] == ["a1", "b2", "c3"]
    assert [o.image_path.name for o in objs] == ["a1.jpg", "b2.bmp", "c3.JPG"]
    for o in objs:
        gt = truth[o.object_id]
        assert o.mask.dtype == bool and o.ignore.dtype == bool
        np.testing.assert_array_equal(o.mask, gt == 255)
        np.testing.assert_array_equal(o.ignore, gt == 128)


def test_berkeley_layout_thresholds_rgb_masks_at_half(tmp_path):
    make_berkeley(tmp_path)
    objs = list(load_dataset(tmp_path))
    assert len(objs) == 2
    for i, o in enumerate(objs):
        _, disc = _scene(10 + i)
        np.testing.assert_array_equal(o.mask, disc)  # the 90-valued rim is background
        assert not o.ignore.any()


def test_davis_layout_counts_any_nonzero_value(tmp_path):
    make_davis(tmp_path)
    objs = list(load_dataset(tmp_path))
    assert [o.object_id for o in objs] == ["000", "001"]
    disc = _scene(20)[1]
    np.testing.assert_array_equal(objs[0].mask, _grow(disc))
    # read with the Berkeley rule instead, the faint rim drops out
    np.testing.assert_array_equal(next(iter(load_dataset(tmp_path, mask_format="half"))).mask, disc)


def test_coco_mval_layout_gives_several_objects_per_picture(tmp_path):
    make_mval(tmp_path)
    objs = list(load_dataset(tmp_path))
    assert [(o.image_path.name, o.object_id) for o in objs] == [
        ("000042.jpg", "cat1_000042"),
        ("000042.jpg", "dog2_000042"),
    ]
    assert objs[0].mask.sum() == _scene(30, center=(18, 32), radius=10)[1].sum()
    assert objs[1].mask[20:45, 38:57].all() and objs[1].mask.sum() == 19 * 25


def test_instance_id_masks_split_into_objects(tmp_path):
    img, _ = _scene(40)
    labels = np.zeros((S, S), np.uint8)
    labels[5:20, 5:20] = 1
    labels[30:60, 30:50] = 2
    _write(tmp_path / "images" / "p.png", img)
    _write(tmp_path / "masks" / "p.png", labels)
    objs = list(load_dataset(tmp_path))
    assert [o.object_id for o in objs] == ["p:1", "p:2"]
    assert objs[0].mask.sum() == 15 * 15 and objs[1].mask.sum() == 30 * 20


def test_limit_and_mask_format_override(tmp_path):
    truth = make_grabcut(tmp_path)
    assert len(list(load_dataset(tmp_path, limit=2))) == 2
    objs = list(load_dataset(tmp_path, mask_format="nonzero", limit=1))
    np.testing.assert_array_equal(objs[0].mask, truth["a1"] > 0)
    assert not objs[0].ignore.any()


def test_decode_objects_rules():
    raw = np.array([[0, 1, 128, 200, 255]], np.uint8)
    ((_, obj, ign),) = decode_objects(raw, "grabcut")
    assert obj.tolist() == [[False, False, False, True, True]]
    assert ign.tolist() == [[False, False, True, False, False]]
    assert decode_objects(raw, "half")[0][1].tolist() == [[False, False, True, True, True]]
    assert decode_objects(raw, "nonzero")[0][1].tolist() == [[False, True, True, True, True]]


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda root: None, "does not exist"),
        (lambda root: (root / "images").mkdir(parents=True), "no mask folder"),
        (lambda root: (root / "masks").mkdir(parents=True), "no picture folder"),
    ],
)
def test_missing_folders_are_input_errors(tmp_path, setup, message):
    root = tmp_path / "bench"
    setup(root)
    with pytest.raises(InputError, match=message):
        load_dataset(root)


def test_unmatched_and_unreadable_files_are_input_errors(tmp_path):
    img, mask = _scene(0)
    _write(tmp_path / "images" / "x.jpg", img)
    _write(tmp_path / "masks" / "y.png", mask.astype(np.uint8) * 255)
    with pytest.raises(InputError, match="matches a picture"):
        load_dataset(tmp_path)
    (tmp_path / "masks" / "x.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="not a readable mask"):
        list(load_dataset(tmp_path))
    with pytest.raises(InputError, match="mask format"):
        load_dataset(tmp_path, mask_format="rle")
    with pytest.raises(InputError, match="limit"):
        load_dataset(tmp_path, limit=0)


# --------------------------------------------------------------------------- metrics


def test_iou_by_hand_with_ignore_band():
    gt = np.zeros((4, 4), bool)
    gt[0:2, 0:2] = True  # 4 object pixels
    pred = np.zeros((4, 4), bool)
    pred[0:2, 1:3] = True  # 4 predicted, 2 shared
    assert iou(pred, gt) == pytest.approx(2 / 6)
    ignore = np.zeros((4, 4), bool)
    ignore[:, 2] = True  # drops the 2 false positives in column 2
    assert iou(pred, gt, ignore) == pytest.approx(2 / 4)
    ignore[:, 0] = True  # also drops the 2 misses in column 0
    assert iou(pred, gt, ignore) == pytest.approx(1.0)
    assert iou(np.zeros((2, 2), bool), np.zeros((2, 2), bool)) == 1.0
    assert mean_iou([0.5, 1.0, None]) == pytest.approx(75.0)
    assert mean_iou([]) is None
    with pytest.raises(InputError, match="shape"):
        iou(np.zeros((2, 2), bool), np.zeros((3, 2), bool))


# --------------------------------------------------------------------------- GrabCut baseline


def test_grabcut_baseline_finds_a_clear_object():
    img, mask = _scene(5, radius=16)
    ys, xs = np.nonzero(mask)
    points = [[xs.min(), 32], [xs.max(), 32], [32, ys.min()], [32, ys.max()]]
    pred = grabcut_baseline(img, points)
    assert pred.dtype == bool and pred.shape == mask.shape
    assert iou(pred, mask) > 0.8
    np.testing.assert_array_equal(pred, grabcut_baseline(img, points))  # seeded: repeatable


def test_grabcut_baseline_degenerate_boxes_do_not_crash():
    img = np.full((12, 12, 3), 100, np.uint8)
    whole = grabcut_baseline(img, [[5, 5]] * 4)  # box + margin covers the whole image
    assert whole.all()
    line = grabcut_baseline(np.full((1, 30, 3), 9, np.uint8), [[2, 0], [20, 0]], margin=0)
    assert line.shape == (1, 30) and line[0, 2:21].all() and not line[0, 21:].any()
    flat = grabcut_baseline(np.full((40, 40, 3), 100, np.uint8), [[15, 15], [25, 25]])
    assert flat.shape == (40, 40)  # uniform image: any answer, no crash


# --------------------------------------------------------------------------- runner


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    return DextrPredictor(build_model("lite0"), input_size=64, device="cpu")


def test_evaluate_objects_same_seed_same_points(tmp_path, predictor):
    make_mval(tmp_path)
    make_grabcut(tmp_path / "g")
    objects = list(load_dataset(tmp_path / "g")) + list(load_dataset(tmp_path))
    a = evaluate_objects(predictor, objects, jitter=3, seed=7, progress=False)
    b = evaluate_objects(predictor.predict, objects, jitter=3, seed=7, progress=False)
    c = evaluate_objects(predictor, objects, jitter=3, seed=8, progress=False)
    assert a.n == b.n == len(objects) == 5
    for ra, rb in zip(a.rows, b.rows):
        np.testing.assert_array_equal(ra.points, rb.points)
        assert 0.0 <= ra.iou <= 1.0 and ra.ms > 0
    assert any((ra.points != rc.points).any() for ra, rc in zip(a.rows, c.rows))
    assert 0.0 <= a.miou <= 100.0 and a.ms_per_object > 0
    assert a.baseline_miou is None and a.baseline_ms_per_object is None
    # each simulated click lies on its object, near the true extreme
    for row, obj in zip(a.rows, objects):
        assert obj.mask[row.points[:, 1], row.points[:, 0]].all()


def test_evaluate_objects_with_baseline_and_in_memory_images(predictor):
    img, mask = _scene(3, radius=16)
    none = np.zeros_like(mask)
    objects = [EvalObject(Path("mem.png"), str(k), mask, none, image=img) for k in range(2)]
    perfect = evaluate_objects(lambda image, pts: mask, objects, baseline="grabcut", progress=False, keep_worst=1)
    assert perfect.miou == pytest.approx(100.0)
    assert perfect.baseline_miou > 80.0 and perfect.baseline_ms_per_object > 0
    assert len(perfect.worst) == 1
    only_baseline = evaluate_objects(None, objects, baseline="grabcut", progress=False)
    assert only_baseline.miou is None and only_baseline.n == 2
    assert only_baseline.summary()["baseline_miou"] == pytest.approx(perfect.summary()["baseline_miou"])
    with pytest.raises(InputError, match="nothing to evaluate"):
        evaluate_objects(None, objects, progress=False)
    with pytest.raises(InputError, match="baseline"):
        evaluate_objects(predictor, objects, baseline="snake", progress=False)
    wrong = [EvalObject(Path("mem.png"), "0", mask[:10], none[:10], image=img)]
    with pytest.raises(InputError, match="picture is 64x64"):
        evaluate_objects(predictor, wrong, progress=False)


def test_report_artefacts(tmp_path, predictor):
    make_grabcut(tmp_path / "data")
    result = evaluate_objects(
        predictor, load_dataset(tmp_path / "data"), baseline="grabcut", progress=False, keep_worst=8
    )
    out = write_report(result, tmp_path / "out", {"weights": "random"})
    rows = list(csv.DictReader(open(out / "objects.csv", encoding="utf-8")))
    assert [r["object"] for r in rows] == ["a1", "b2", "c3"]
    assert set(rows[0]) >= {"image", "object", "iou", "ms", "baseline_iou", "points"}
    assert np.asarray(json.loads(rows[0]["points"])).shape == (4, 2)
    hist = cv2.imread(str(out / "iou_histogram.png"))
    assert hist is not None and hist.shape[2] == 3
    worst = sorted((out / "worst").glob("*.png"))
    assert len(worst) == 3 and all(cv2.imread(str(p)) is not None for p in worst)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n"] == 3 and summary["weights"] == "random" and len(summary["worst"]) == 3


# --------------------------------------------------------------------------- CLI


def test_cli_prints_a_final_json_line(tmp_path, capsys, weights_dir):
    pytest.importorskip("dextr_backend.weights.store", reason="the weights store is not written yet")
    pytest.importorskip("dextr_backend.cli.weights", reason="the weights CLI is not written yet")
    from dextr_backend.cli import main

    make_grabcut(tmp_path / "data")
    torch.manual_seed(0)
    weights = tmp_path / "random-lite0.pth"
    torch.save(build_model("lite0").state_dict(), weights)
    code = main(
        [
            "evaluate",
            str(tmp_path / "data"),
            "--weights",
            str(weights),
            "--device",
            "cpu",
            "--limit",
            "2",
            "--jitter",
            "2",
            "--json",
            "--no-progress",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    line = json.loads(out.strip().splitlines()[-1])
    assert line["n"] == 2 and 0.0 <= line["miou"] <= 100.0 and line["ms_per_object"] > 0
    assert line["baseline_miou"] is None and line["jitter"] == 2
    assert {"baseline_ms_per_object", "weights", "dataset"} <= set(line)
    assert (tmp_path / "out" / "summary.json").exists()


def test_cli_help_and_bad_dataset(tmp_path, capsys):
    import argparse

    from dextr_backend.cli.evaluate import add_parser, run

    parser = argparse.ArgumentParser(prog="dextr-backend")
    add_parser(parser.add_subparsers(dest="command"))
    with pytest.raises(SystemExit):
        parser.parse_args(["evaluate", "--help"])
    text = capsys.readouterr().out
    for option in (
        "--weights",
        "--baseline",
        "--jitter",
        "--limit",
        "--out",
        "--json",
        "--seed",
        "--device",
        "--mask-format",
        "boundary_GT",
    ):
        assert option in text
    args = parser.parse_args(["evaluate", str(tmp_path / "absent")])
    with pytest.raises(InputError, match="does not exist"):
        run(args)
    with pytest.raises(SystemExit):
        parser.parse_args(["evaluate", str(tmp_path), "--jitter", "-1"])


# --------------------------------------------------------------------------- real data


def test_real_grabcut_reader_and_baseline(shared_data):
    ds = load_dataset(shared_data / "GrabCut", limit=2)
    assert ds.mask_format == "grabcut" and len(ds.pairs) == 50
    result = evaluate_objects(None, ds, baseline="grabcut", progress=False)
    assert result.n == 2
    assert result.baseline_miou > 50.0


def test_box_clicks_are_the_tight_box_side_midpoints():
    from dextr_backend.data.benchmarks import EvalObject
    from dextr_backend.evaluation.runner import evaluate_objects

    mask = np.zeros((50, 80), bool)
    mask[10:31, 20:61] = True
    seen = []
    obj = EvalObject(Path("synthetic.png"), "box", mask, np.zeros_like(mask), image=np.zeros((50, 80, 3), np.uint8))

    def record(image, points):
        seen.append(np.asarray(points))
        return mask

    result = evaluate_objects(record, [obj], clicks="box", progress=False, warmup=False)
    np.testing.assert_allclose(seen[0], [[20, 20], [60, 20], [40, 10], [40, 30]])
    assert result.miou == 100.0
