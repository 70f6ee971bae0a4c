"""Corrective clicks: the lite0c and lite0h networks, their input channels, the two-pass predictor, the click
protocol, ``evaluate --max-clicks`` and training with simulated corrections."""

from __future__ import annotations

import csv
import json
import logging
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dextr_backend import geometry
from dextr_backend.data.benchmarks import EvalObject
from dextr_backend.errors import InputError, WeightsError
from dextr_backend.evaluation import evaluate_objects, grabcut_baseline, iou, write_report
from dextr_backend.evaluation.clicks import Click, next_click
from dextr_backend.evaluation.metrics import clicks_to_reach
from dextr_backend.models import build_model, detect_architecture, get_architecture, grow_state, load_state
from dextr_backend.predictor import DextrPredictor

sys.path.insert(0, str(Path(__file__).parent))
from test_training import make_shapes, small_config  # noqa: E402


def trained_looking_lite0(seed: int = 0) -> torch.nn.Module:
    """A random lite0 with BatchNorm statistics that are not the fresh 0/1."""
    torch.manual_seed(seed)
    model = build_model("lite0").eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model


@pytest.fixture(scope="module")
def parent():
    return trained_looking_lite0()


@pytest.fixture(scope="module")
def grown(parent):
    return load_state(build_model("lite0c"), grow_state("lite0c", parent.state_dict())).eval()


@pytest.fixture()
def scene():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    points = np.array([[30, 60], [110, 62], [70, 20], [72, 100]], dtype=float)
    return image, points


# ------------------------------------------------------------------------------------- network


def test_grown_lite0c_answers_both_passes_exactly_as_its_parent(parent, grown):
    x = torch.rand(2, 4, 96, 96) * 255
    corrections = torch.rand(2, 3, 96, 96) * 255
    with torch.inference_mode():
        expected = parent(x)
        assert torch.equal(grown(x), expected)  # pass 1: the base
        assert torch.equal(grown(torch.cat([x, corrections], 1)), expected)  # pass 2: zero new filters
    stem = grown.corrector.backbone.conv_stem.weight
    assert stem.shape[1] == 7 and torch.count_nonzero(stem[:, 4:]) == 0
    with pytest.raises(ValueError, match="4 or 7 input channels"):
        grown(torch.rand(1, 5, 32, 32))


def test_lite0c_is_detected_keeps_its_state_when_grown_again_and_declares_corrections(grown):
    state = grown.state_dict()
    assert detect_architecture(state) == "lite0c"
    again = grow_state("lite0c", state)
    assert again.keys() == state.keys() and all(torch.equal(again[k], state[k]) for k in state)
    assert get_architecture("lite0c").corrections and get_architecture("lite0c").input_size == 384
    assert not get_architecture("lite0").corrections
    with pytest.raises(WeightsError, match="cannot grow into lite0c"):
        grow_state("lite0c", build_model("lite2").state_dict())


def test_the_base_stays_in_eval_mode_and_frozen():
    model = build_model("lite0c").train()
    assert not model.base.training and model.corrector.training
    assert not any(p.requires_grad for p in model.base.parameters())


# ------------------------------------------------------------------------------------- geometry


def test_correction_channels_use_the_heatmap_mapping_and_drop_clicks_outside_the_crop(scene):
    image, points = scene
    x, crop = geometry.prepare_input(image, points, 64)
    previous = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    pos, neg = [[30, 60]], [[150, 5], [50, 50]]
    extra, kept_pos, kept_neg = geometry.correction_channels(crop, pos, neg, previous)
    assert extra.shape == (64, 64, 3) and extra.dtype == np.float32
    # A positive click on an extreme point gives the same Gaussian the heatmap has there.
    alone = geometry.heatmap(geometry.to_crop(np.array(pos, float), crop.box, 64), (64, 64), geometry.crop_sigma(64))
    np.testing.assert_allclose(extra[:, :, 0], alone, atol=1e-4)
    assert extra[:, :, 0].max() == pytest.approx(255.0) and extra[:, :, 1].max() == pytest.approx(255.0)
    np.testing.assert_allclose(extra[:, :, 2], previous * 255.0, rtol=1e-6)
    assert len(kept_pos) == 1 and len(kept_neg) == 2
    far = [[crop.box[2] + 1, crop.box[1] + 5]]  # one pixel right of the padded box
    extra, kept_pos, kept_neg = geometry.correction_channels(crop, [], far, previous)
    assert len(kept_neg) == 0 and not extra[:, :, :2].any()  # no clicks: zero maps


# ------------------------------------------------------------------------------------- predictor


def test_a_version_without_corrections_ignores_them_and_says_so(parent, scene, caplog):
    image, points = scene
    predictor = DextrPredictor(parent, 64, threshold=0.5, device="cpu", version="plain")
    plain = predictor.predict(image, points)
    with caplog.at_level(logging.INFO, logger="dextr_backend.predictor"):
        fixed = predictor.predict(image, points, positives=[[70, 60]], negatives=[[40, 30]])
    assert "plain take no corrective clicks: 2 ignored" in caplog.text
    assert fixed.corrections == 0
    np.testing.assert_array_equal(fixed.probabilities, plain.probabilities)
    assert predictor.correct(image, plain, [[70, 60]], []) is plain


def test_lite0c_uses_corrections_in_one_second_pass(parent, scene):
    image, points = scene
    model = load_state(build_model("lite0c"), grow_state("lite0c", parent.state_dict())).eval()
    with torch.no_grad():  # a corrector that has learned something from the new channels
        torch.manual_seed(1)
        model.corrector.backbone.conv_stem.weight[:, 4:].normal_(0, 0.5)
    seen = {"base": [], "corrector": []}
    model.base.register_forward_hook(lambda m, i, o: seen["base"].append(i[0].shape[0]))
    model.corrector.register_forward_hook(lambda m, i, o: seen["corrector"].append(i[0].clone()))
    predictor = DextrPredictor(model, 64, threshold=0.5, device="cpu", batch_size=8)
    assert predictor.corrections
    pos, neg = [[70, 60]], [[40, 30], [100, 90]]
    plain, fixed, other = predictor.predict_batch(
        [(image, points), (image, points, pos, neg), (image, points, [], [[60, 40]])]
    )
    assert seen["base"] == [3] and len(seen["corrector"]) == 1 and seen["corrector"][0].shape[0] == 2
    assert plain.corrections == 0 and fixed.corrections == 3 and other.corrections == 1
    assert not np.array_equal(fixed.probabilities, plain.probabilities)
    # The corrector saw exactly the 4 channels of pass 1 plus the correction channels.
    x4, crop = geometry.prepare_input(image, points, 64)
    extra, _, _ = geometry.correction_channels(crop, pos, neg, plain.first_probabilities)
    sent = seen["corrector"][0][0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(sent, np.concatenate([x4, extra], 2), rtol=1e-6)
    # correct() from the stored pass 1 is the same request without pass 1 (a batch of one, not two:
    # the network's arithmetic may differ in the last bit).
    again = predictor.correct(image, plain, pos, neg)
    np.testing.assert_allclose(again.probabilities, fixed.probabilities, atol=1e-6)
    np.testing.assert_array_equal(again.mask, fixed.mask)
    assert seen["base"] == [3]
    with pytest.raises(InputError, match="batch item"):
        predictor.predict_batch([(image, points, pos)])


# ------------------------------------------------------------------------------------- protocol


def test_a_missed_part_gets_a_positive_click_at_its_centre():
    gt = np.zeros((60, 80), bool)
    gt[10:50, 10:70] = True
    pred = gt.copy()
    pred[20:41, 40:61] = False  # a 21x21 hole in the mask
    assert next_click(pred, gt) == Click(50, 30, True)


def test_false_object_gets_a_negative_click_and_the_largest_region_wins():
    gt = np.zeros((60, 80), bool)
    gt[20:40, 20:40] = True
    pred = gt.copy()
    pred[45:56, 50:75] = True  # false object, 11 x 25
    pred[20:25, 20:25] = False  # small miss
    click = next_click(pred, gt)
    assert click == Click(click.x, 50, False) and 55 <= click.x <= 69
    assert next_click(gt, gt) is None


def test_the_image_border_and_the_ignore_band_count_as_boundary():
    gt = np.zeros((40, 40), bool)
    pred = np.zeros((40, 40), bool)
    pred[0:9, 0:40] = True  # false strip along the top border
    click = next_click(pred, gt)
    assert not click.positive and click.y == 4  # mid-strip, not on the border row
    ignore = np.zeros((40, 40), bool)
    ignore[0:9, 0:20] = True  # the band covers the strip's left half
    click = next_click(pred, gt, ignore)
    assert click.x >= 24 and not ignore[click.y, click.x]
    assert next_click(pred, gt, ignore=np.ones((40, 40), bool)) is None


def test_random_interior_clicks_stay_deep_inside_the_region():
    gt = np.zeros((60, 60), bool)
    gt[10:50, 10:50] = True
    pred = np.zeros_like(gt)
    rng = np.random.default_rng(0)
    for _ in range(20):
        c = next_click(pred, gt, rng=rng)
        assert c.positive and 19 <= c.x <= 40 and 19 <= c.y <= 40


# ------------------------------------------------------------------------------------- evaluate

# IoU after 4, 5, 6, 7 clicks for each object of the stub below.
SCRIPT = {
    0: [0.8, 0.875, 0.925, 0.95],
    1: [0.5, 0.5, 0.5, 0.5],
    2: [0.95, 0.95, 0.95, 0.95],
    3: [0.9, 0.85, 0.85, 0.875],
}


def stub_objects():
    gt = np.zeros((64, 64), bool)
    gt[10:50, 10:50] = True  # 40 x 40
    objects = []
    for k in SCRIPT:
        image = np.full((64, 64, 3), k, np.uint8)
        objects.append(EvalObject(Path(f"{k}.png"), str(k), gt, np.zeros_like(gt), image=image))
    return objects, gt


def stub(image, points, positives=(), negatives=()):
    """Misses the top rows of the square: as many as the object's script says for this click count."""
    target = SCRIPT[int(image[0, 0, 0])][len(positives) + len(negatives)]
    mask = np.zeros((64, 64), bool)
    rows = int(round((1 - target) * 40))
    mask[10 + rows : 50, 10:50] = True
    return mask


def test_noc_and_nof_bookkeeping_on_a_scripted_method():
    objects, gt = stub_objects()
    result = evaluate_objects(stub, objects, max_clicks=7, progress=False, warmup=False)
    for row, script in zip(result.rows, SCRIPT.values()):
        assert row.ious == pytest.approx(script)
    assert [r.noc(0.85) for r in result.rows] == [5, 7, 4, 4]
    assert [r.noc(0.90) for r in result.rows] == [6, 7, 4, 4]
    assert result.noc(0.85) == pytest.approx(5.0) and result.noc(0.90) == pytest.approx(5.25)
    assert result.nof(0.90) == 2  # still under 90 % after 7 clicks: objects 1 and 3
    s = result.summary()
    assert s["noc85"] == 5.0 and s["noc90"] == 5.25 and s["nof90"] == 2 and s["max_clicks"] == 7
    assert list(s["miou_by_clicks"]) == ["4", "5", "6", "7"]
    assert s["miou_by_clicks"]["4"] == pytest.approx(100 * np.mean([v[0] for v in SCRIPT.values()]), abs=1e-3)
    assert "noc85" not in evaluate_objects(stub, objects, progress=False).summary()  # 4 clicks: as before
    assert clicks_to_reach([0.5, 0.6], 0.9) == 5 and clicks_to_reach([0.95], 0.9) == 4
    with pytest.raises(InputError, match="4 or more"):
        evaluate_objects(stub, objects, max_clicks=3, progress=False)


def test_a_perfect_mask_gets_no_more_clicks():
    objects, gt = stub_objects()
    calls = []

    def perfect(image, points, positives=(), negatives=()):
        calls.append(len(positives) + len(negatives))
        return gt

    result = evaluate_objects(perfect, objects[:1], max_clicks=6, progress=False, warmup=False)
    assert result.rows[0].ious == [1.0, 1.0, 1.0] and calls == [0]


def test_report_draws_the_click_curve_and_counts_clicks_per_object(tmp_path):
    objects, gt = stub_objects()
    result = evaluate_objects(stub, objects, max_clicks=7, baseline="grabcut", progress=False, warmup=False)
    assert result.summary()["baseline_miou_by_clicks"].keys() == {"4", "5", "6", "7"}
    out = write_report(result, tmp_path / "out")
    image = cv2.imread(str(out / "clicks.png"))
    assert image is not None and image.shape == (440, 720, 3)
    rows = list(csv.DictReader(open(out / "objects.csv", encoding="utf-8")))
    assert [r["noc90"] for r in rows] == ["6", "7", "4", "4"]
    assert json.loads(rows[0]["ious"]) == pytest.approx(SCRIPT[0]) and rows[0]["baseline_noc90"]


def test_grabcut_seeds_fix_its_mask():
    rng = np.random.default_rng(0)
    image = np.clip(rng.normal(110, 10, (80, 120, 3)), 0, 255).astype(np.uint8)
    left, right = np.zeros((80, 120), np.uint8), np.zeros((80, 120), np.uint8)
    cv2.circle(left, (35, 40), 20, 1, -1)
    cv2.circle(right, (85, 40), 20, 1, -1)
    image[(left | right) > 0] = (220, 30, 30)
    points = geometry.extreme_points(left.astype(bool))
    gt = left.astype(bool)
    # The box around the left disc (+10 px) reaches into the right one; a negative click there helps.
    before = iou(grabcut_baseline(image, points), gt)
    after = iou(grabcut_baseline(image, points, negatives=[(62, 40)]), gt)
    assert after >= before
    with_both = grabcut_baseline(image, points, positives=[(35, 40)], negatives=[(62, 40)])
    assert with_both[40, 35] and not with_both[40, 62]


def test_evaluate_command_with_max_clicks(tmp_path, capsys, weights_dir):
    from test_evaluation import make_grabcut

    from dextr_backend.cli import main

    make_grabcut(tmp_path / "data")
    weights = tmp_path / "lite0c.pt"
    torch.save(grow_state("lite0c", trained_looking_lite0().state_dict()), weights)
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
            "--max-clicks",
            "6",
            "--json",
            "--no-progress",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "NoC@85" in out
    line = json.loads(out.strip().splitlines()[-1])
    assert {"noc85", "noc90", "nof90", "miou_by_clicks", "ms_per_correction"} <= set(line)
    assert line["miou_by_clicks"]["4"] == line["miou"] and line["max_clicks"] == 6
    assert (tmp_path / "out" / "clicks.png").exists()
    with pytest.raises(SystemExit):
        main(["evaluate", str(tmp_path / "data"), "--max-clicks", "3"])
    assert "must be 4 or more" in capsys.readouterr().err


# ------------------------------------------------------------------------------------- training


def test_simulated_corrections_give_every_sample_at_least_one_click():
    from dextr_backend.training.corrections import simulate

    y = torch.zeros(3, 1, 32, 32)
    y[:, :, 8:24, 8:24] = 1
    x = torch.rand(3, 4, 32, 32) * 255

    def perfect(inputs):  # no error at all: the random fallback click
        return y[: len(inputs), 0].clone()

    def empty(inputs):  # everything missed: protocol clicks, one per round
        return torch.zeros(len(inputs), 32, 32)

    for forward in (perfect, empty):
        out = simulate(forward, x, y, 3, 0.5, np.random.default_rng(0))
        assert out.shape == (3, 7, 32, 32) and torch.equal(out[:, :4], x)
        assert all(out[i, 4:6].max() > 200 for i in range(3))
        assert torch.equal(out[:, 6], forward(x) * 255.0)


def test_lite0c_training_moves_only_the_corrector(tmp_path):
    from dextr_backend.data.objects import folder_objects
    from dextr_backend.data.splits import split
    from dextr_backend.training.trainer import Trainer

    refs = folder_objects(make_shapes(tmp_path / "shapes"))
    train, val = split(refs)
    parent = build_model("lite0").state_dict()
    trainer = Trainer(
        small_config(arch="lite0c", samples_per_epoch=8, lr=1e-2, val_objects=2),
        train,
        val,
        tmp_path / "run",
        init_state=grow_state("lite0c", parent),
    )
    backbone_lr = {id(p) for p in trainer.optimizer.param_groups[0]["params"]}
    assert id(trainer.model.corrector.backbone.conv_stem.weight) in backbone_lr
    assert id(trainer.model.corrector.decoder.head[1].weight) not in backbone_lr
    result = trainer.run()
    after = trainer.model.state_dict()
    assert all(torch.equal(after[f"base.{k}"], v) for k, v in parent.items())
    assert torch.count_nonzero(after["corrector.backbone.conv_stem.weight"][:, 4:]) > 0
    assert {"val_miou", "val_miou_6"} <= set(result.history[0])
    assert result.best_val_miou == result.history[0]["val_miou_6"]
    with pytest.raises(InputError, match="grows from a trained version"):
        Trainer(small_config(arch="lite0c"), train, val, tmp_path / "other")


def test_train_command_grows_lite0c_and_records_the_corrected_scores(tmp_path, weights_dir, capsys):
    from dextr_backend.cli import main
    from dextr_backend.weights.store import WeightsStore

    shapes = make_shapes(tmp_path / "shapes")
    WeightsStore(weights_dir).add_version(
        build_model("lite0").state_dict(), "lite0", name="base", input_size=64, threshold=0.6, trim=1, make_current=True
    )
    code = main(
        [
            "train",
            "--dataset",
            str(shapes),
            "--init",
            "base",
            "--arch",
            "lite0c",
            "--epochs",
            "1",
            "--samples-per-epoch",
            "8",
            "--batch-size",
            "4",
            "--val-objects",
            "2",
            "--corrections",
            "2",
            "--name",
            "fixer",
            "--force",
        ]
    )
    assert code == 0
    assert "val_miou_6" in capsys.readouterr().out
    version = WeightsStore(weights_dir).get("fixer")
    assert version.arch == "lite0c" and version.threshold == 0.6 and version.trim == 1
    assert {"val_miou_6", "baseline_val_miou_6"} <= set(version.metrics)
    assert version.card["hyper_parameters"]["corrections"] == 2
    assert "val_miou_6" in version.card["history"][0]
    assert main(["train", "--dataset", str(shapes), "--corrections", "0"]) == 2


def test_grown_default_model_reproduces_its_parent_on_real_objects(shared_data, weights_dir):
    """The shipped default grown into lite0c: the same masks with and without corrective clicks."""
    from dextr_backend.build import predictor_for
    from dextr_backend.data.benchmarks import load_dataset
    from dextr_backend.postprocess import PostProcess
    from dextr_backend.weights.store import WeightsStore

    loaded = WeightsStore(weights_dir).load("bsds-lite0-v3.2")
    parent = predictor_for(loaded, device="cpu")
    model = load_state(build_model("lite0c"), grow_state("lite0c", loaded.state_dict))
    child = DextrPredictor(
        model,
        loaded.input_size,
        threshold=loaded.threshold,
        device="cpu",
        postprocess=PostProcess(trim=loaded.meta.trim),
    )
    for obj in list(load_dataset(shared_data / "GrabCut", limit=2)):
        image = cv2.cvtColor(cv2.imread(str(obj.image_path)), cv2.COLOR_BGR2RGB)
        points = geometry.extreme_points(obj.mask)
        first = parent.predict(image, points)
        click = next_click(first.mask, obj.mask, obj.ignore)
        pos, neg = ([(click.x, click.y)], []) if click.positive else ([], [(click.x, click.y)])
        np.testing.assert_array_equal(child.predict(image, points).probabilities, first.probabilities)
        fixed = child.predict(image, points, pos, neg)
        assert fixed.corrections == 1
        np.testing.assert_allclose(fixed.probabilities, first.probabilities, atol=1e-6)
        np.testing.assert_array_equal(fixed.mask, first.mask)


# ------------------------------------------------------------------------------------- lite0h


def clicked(x: torch.Tensor, positives=(), negatives=()) -> torch.Tensor:
    """``(N, 4, S, S)`` -> 7 channels with the same clicks on every sample (and a pass-1 map)."""
    s = x.shape[-1]
    pos = torch.from_numpy(geometry.click_map(np.array(positives, float), s))
    neg = torch.from_numpy(geometry.click_map(np.array(negatives, float), s))
    extra = torch.stack([pos, neg, torch.full((s, s), 128.0)])
    return torch.cat([x, extra.expand(len(x), -1, -1, -1)], 1)


@pytest.fixture(scope="module")
def headed(parent):
    return load_state(build_model("lite0h"), grow_state("lite0h", parent.state_dict())).eval()


def test_grown_lite0h_answers_both_passes_exactly_as_its_parent(parent, headed):
    x = torch.rand(2, 4, 96, 96) * 255
    with torch.inference_mode():
        expected = parent(x)
        assert torch.equal(headed(x), expected)
        assert torch.equal(headed(clicked(x, [(40, 50)], [(10, 80), (70, 20)])), expected)
        assert torch.equal(headed(torch.cat([x, torch.rand(2, 3, 96, 96) * 255], 1)), expected)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.equal(headed(clicked(x, [(40, 50)])), parent(x))
    assert sum(p.numel() for p in headed.head.parameters()) < 100_000
    with pytest.raises(ValueError, match="4 or 7 input channels"):
        headed(torch.rand(1, 5, 32, 32))


def test_lite0h_is_detected_grows_once_and_keeps_its_base_frozen(headed):
    state = headed.state_dict()
    assert detect_architecture(state) == "lite0h"
    again = grow_state("lite0h", state)
    assert again.keys() == state.keys() and all(torch.equal(again[k], state[k]) for k in state)
    spec = get_architecture("lite0h")
    assert spec.corrections and spec.input_size == 384
    with pytest.raises(WeightsError, match="cannot grow into lite0h"):
        grow_state("lite0h", build_model("lite2").state_dict())
    model = build_model("lite0h").train()
    assert not model.base.training and model.head.training
    assert not any(p.requires_grad for p in model.base.parameters())


def test_lite0h_finds_the_clicks_and_a_trained_head_follows_them(parent):
    from dextr_backend.models.correction_head import click_points

    maps = clicked(torch.zeros(1, 4, 64, 64), [(5, 7), (40, 30)], [(60, 2)])[0, 4:6]
    points = click_points(maps)
    assert sorted(points[0].tolist()) == [[5.0, 7.0], [40.0, 30.0]] and points[1].tolist() == [[60.0, 2.0]]
    model = load_state(build_model("lite0h"), grow_state("lite0h", parent.state_dict())).eval()
    torch.nn.init.normal_(model.head.out.weight, std=0.5)
    x = torch.rand(1, 4, 64, 64) * 255
    with torch.inference_mode():
        here, there = model(clicked(x, [(10, 10)])), model(clicked(x, [(50, 50)]))
    assert not torch.equal(here, there)


def test_reusing_the_parents_pass_changes_nothing(parent):
    model = load_state(build_model("lite0h"), grow_state("lite0h", parent.state_dict())).eval()
    torch.nn.init.normal_(model.head.out.weight, std=0.5)
    x = torch.rand(3, 4, 64, 64) * 255
    inputs = clicked(x, [(20, 30)], [(50, 10)])
    with torch.no_grad():
        expected = model(inputs)
        model.reuse_base = True
        assert torch.equal(model(x), parent(x))  # fills the cache
        assert torch.equal(model(inputs), expected)  # the same rows
        assert torch.equal(model(inputs[[2, 0]]), expected[[2, 0]])  # some of them, reordered
        other = clicked(torch.rand(1, 4, 64, 64) * 255, [(20, 30)])
        model.reuse_base = False
        fresh = model(other)
        model.reuse_base = True
        assert torch.equal(model(other), fresh)  # a new crop is computed, not reused


def test_correction_loss_weighs_pass_one_errors():
    from dextr_backend.training.loss import balanced_bce, correction_bce

    target = torch.tensor([[[[1.0, 1.0, 0.0, 0.0]]]])
    logits = torch.tensor([[[[2.0, -1.0, -2.0, -2.0]]]])
    previous = torch.tensor([[[True, False, False, False]]])  # pass 1 missed pixel 1
    assert torch.allclose(correction_bce(logits, target, previous, 1.0), balanced_bce(logits, target))
    # Weight 4: emphasis (1, 4, 1, 1), mean 7/4, times the balanced 1/2 each.
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits.flatten(), target.flatten(), reduction="none")
    expected = (0.5 * torch.tensor([1.0, 4.0, 1.0, 1.0]) / 1.75 * bce).mean()
    assert torch.allclose(correction_bce(logits, target, previous, 4.0), expected)
    assert correction_bce(logits, target, previous, 4.0) > balanced_bce(logits, target)  # the missed pixel is the worst


def test_lite0h_training_moves_only_the_head(tmp_path):
    from dextr_backend.data.objects import folder_objects
    from dextr_backend.data.splits import split
    from dextr_backend.training.trainer import Trainer

    refs = folder_objects(make_shapes(tmp_path / "shapes"))
    train, val = split(refs)
    parent = build_model("lite0").state_dict()
    trainer = Trainer(
        small_config(arch="lite0h", samples_per_epoch=8, lr=1e-2, val_objects=2, error_weight=4.0),
        train,
        val,
        tmp_path / "run",
        init_state=grow_state("lite0h", parent),
    )
    assert trainer.model.reuse_base
    trained = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert trained == {id(p) for p in trainer.model.head.parameters()}
    result = trainer.run()
    after = trainer.model.state_dict()
    assert all(torch.equal(after[f"base.{k}"], v) for k, v in parent.items())
    assert torch.count_nonzero(after["head.out.weight"]) > 0
    assert result.best_val_miou == result.history[0]["val_miou_6"]


def test_retraining_a_trained_lite0h_fine_tunes_its_parent_and_keeps_its_head(tmp_path):
    """A team's labels teach the extreme-point masks: a lite0h version whose head is trained fine-tunes
    its parent on the 4-click loss, and its head stays as it was (TrainConfig.train_part)."""
    from dextr_backend.data.objects import folder_objects
    from dextr_backend.data.splits import split
    from dextr_backend.training.trainer import Trainer

    refs = folder_objects(make_shapes(tmp_path / "shapes"))
    train, val = split(refs)
    state = grow_state("lite0h", build_model("lite0").state_dict())
    state["head.out.weight"] = torch.full_like(state["head.out.weight"], 0.01)  # a trained head
    trainer = Trainer(
        small_config(arch="lite0h", samples_per_epoch=8, lr=1e-2, val_objects=2),
        train,
        val,
        tmp_path / "run",
        init_state=state,
    )
    assert trainer.part == "parent" and not trainer.model.reuse_base
    trained = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert trained and trained <= {id(p) for p in trainer.model.base.parameters()}
    result = trainer.run()
    after = trainer.model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in state.items() if k.startswith("head."))
    assert any(
        not torch.equal(after[k], v) for k, v in state.items() if k.startswith("base.") and v.is_floating_point()
    )
    assert "val_miou_6" in result.history[0]  # still scored with its corrections
    grown = Trainer(
        small_config(arch="lite0h", samples_per_epoch=8, val_objects=2),
        train,
        val,
        tmp_path / "run2",
        init_state=grow_state("lite0h", build_model("lite0").state_dict()),
    )
    assert grown.part == "head"
    with pytest.raises(InputError, match="head or parent"):
        Trainer(small_config(arch="lite0h", train_part="both"), train, val, tmp_path / "run3", init_state=state)


def test_lite0h_predictor_runs_the_backbone_once_per_crop(parent, scene):
    image, points = scene
    model = load_state(build_model("lite0h"), grow_state("lite0h", parent.state_dict())).eval()
    torch.nn.init.normal_(model.head.out.weight, std=0.5)
    calls = []
    decode = model.base.decode
    model.base.decode = lambda x: calls.append(len(x)) or decode(x)
    predictor = DextrPredictor(model, 64, threshold=0.5, device="cpu")
    first = predictor.predict(image, points)
    fixed = predictor.predict(image, points, positives=[(70, 60)], negatives=[(40, 40)])
    again = predictor.correct(image, first, positives=[(70, 60)], negatives=[(40, 40)])
    assert calls == [1] and fixed.corrections == 2  # one backbone pass for the crop, 3 requests
    np.testing.assert_array_equal(again.probabilities, fixed.probabilities)
    model.reuse_base = False
    plain = DextrPredictor.__new__(DextrPredictor)
    plain.__dict__.update(predictor.__dict__)
    np.testing.assert_allclose(
        plain.correct(image, first, positives=[(70, 60)], negatives=[(40, 40)]).probabilities,
        fixed.probabilities,
        atol=1e-6,
    )
    assert not np.array_equal(fixed.probabilities, first.probabilities)
    model.reuse_base = True
    predictor.predict(image, points + 3, positives=[(70, 60)])
    assert calls == [1, 1, 1]  # a new crop: computed (plain: once more)
