"""Training on tiny synthetic data: the loss falls, a killed run resumes, promotion is guarded."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dextr_backend.data.objects import folder_objects
from dextr_backend.data.splits import split
from dextr_backend.errors import InputError, WeightsError
from dextr_backend.models import build_model
from dextr_backend.training.loss import balanced_bce
from dextr_backend.training.promotion import Listeners, TrainRequest, train_and_promote
from dextr_backend.training.samples import Augment, make_sample
from dextr_backend.training.trainer import TrainConfig, Trainer
from dextr_backend.weights.files import read_state_file
from dextr_backend.weights.store import WeightsStore


def make_shapes(root: Path, n: int = 12, size: int = 96, seed: int = 0) -> Path:
    """Pictures of one coloured triangle or ring each on textured noise, masks 0/255 (img06 and
    img09 fall in the validation split)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        img = rng.integers(0, 120, (size, size, 3)).astype(np.uint8)
        mask = np.zeros((size, size), np.uint8)
        c = rng.integers(30, 66, 2)
        r = int(rng.integers(16, 26))
        if i % 2:
            pts = np.array([[c[0] - r, c[1] + r], [c[0] + r, c[1] + r], [c[0], c[1] - r]], np.int32)
            cv2.fillPoly(mask, [pts], 255)
        else:
            cv2.circle(mask, (int(c[0]), int(c[1])), r, 255, -1)
            cv2.circle(mask, (int(c[0]), int(c[1])), r // 2, 0, -1)
        img[mask > 0] = (230, 200, 40)
        cv2.imwrite(str(root / "images" / f"img{i:02d}.png"), img)
        cv2.imwrite(str(root / "masks" / f"img{i:02d}.png"), mask)
    return root


@pytest.fixture()
def shapes(tmp_path):
    return make_shapes(tmp_path / "shapes")


def small_config(**kw) -> TrainConfig:
    base = dict(
        arch="lite0",
        resolution=64,
        epochs=1,
        samples_per_epoch=48,
        batch_size=4,
        val_objects=2,
        warmup_steps=2,
        seed=0,
        augment=Augment(jitter=2, margin=(8, 12)),
    )
    base.update(kw)
    return TrainConfig(**base)


def test_split_is_by_image_and_deterministic(shapes):
    refs = folder_objects(shapes)
    train, val = split(refs)
    assert {Path(r.image).stem for r in val} == {"img06", "img09"}
    assert not {r.image for r in train} & {r.image for r in val}
    assert split(refs) == (train, val)


def test_capped_validation_covers_every_image(shapes):
    from dextr_backend.data.splits import spread

    refs = folder_objects(shapes)  # one object per image, ordered by image
    picked = spread(refs, 4)
    assert len(picked) == 4 and len({r.image for r in picked}) == 4
    assert picked[0] == refs[0] and picked[-1].image > refs[len(refs) // 2].image
    assert spread(refs, 100) == refs


def test_samples_match_inference_inputs(shapes):
    refs = folder_objects(shapes)
    from dextr_backend.data.objects import load_object

    image, mask = load_object(refs[0])
    x, y = make_sample(image, mask, 64, Augment(margin=(8, 12)), np.random.default_rng(0))
    assert x.shape == (64, 64, 4) and y.shape == (64, 64)
    assert x[:, :, 3].max() == pytest.approx(255.0) and set(np.unique(y)) <= {0.0, 1.0}
    assert 0.05 < y.mean() < 0.95


def test_colour_jitter_changes_the_picture_not_the_object(shapes):
    from dextr_backend.data.objects import load_object

    image, mask = load_object(folder_objects(shapes)[0])
    plain = dataclasses.replace(Augment.none(), margin=(8, 8))
    coloured = dataclasses.replace(plain, color=0.3)
    x0, y0 = make_sample(image, mask, 64, plain, np.random.default_rng(1))
    x1, y1 = make_sample(image, mask, 64, coloured, np.random.default_rng(1))
    assert np.array_equal(y0, y1) and np.array_equal(x0[:, :, 3], x1[:, :, 3])  # same object, same clicks
    assert np.abs(x0[:, :, :3] - x1[:, :, :3]).mean() > 1.0  # other colours
    assert 0 <= x1[:, :, :3].min() and x1[:, :, :3].max() <= 255 + 1e-3


def test_train_command_refuses_a_bad_colour_jitter(shapes, capsys, weights_dir):
    from dextr_backend.cli import main

    assert main(["train", "--dataset", str(shapes), "--color-jitter", "1.5"]) == 2
    assert "--color-jitter" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("cpu_bf16", [False, True], ids=["fp32", "bf16-autocast"])
def test_a_few_steps_lower_the_loss(shapes, tmp_path, cpu_bf16):
    refs = folder_objects(shapes)
    trainer = Trainer(small_config(samples_per_epoch=96, cpu_bf16=cpu_bf16), refs, [], tmp_path / "run")
    rng = np.random.default_rng(123)
    from dextr_backend.data.objects import load_object

    batch = [make_sample(*load_object(r), 64, Augment.none(), rng) for r in refs[:6]]
    x = torch.from_numpy(np.stack([b[0] for b in batch])).permute(0, 3, 1, 2)
    y = torch.from_numpy(np.stack([b[1] for b in batch]))[:, None]

    def loss():
        trainer.model.eval()
        with torch.no_grad():
            return float(balanced_bce(trainer.model(x), y))

    before = loss()
    trainer.run()
    assert loss() < 0.8 * before


@pytest.mark.slow
def test_training_resumes_after_a_kill(shapes, tmp_path):
    run_dir = tmp_path / "run"
    script = tmp_path / "train.py"
    script.write_text(
        "import sys, time, torch\n"
        "torch.set_num_threads(1)\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from test_training import small_config, folder_objects\n"
        "from dextr_backend.training.trainer import Trainer\n"
        "refs = folder_objects(sys.argv[1])\n"
        "Trainer(small_config(epochs=30, samples_per_epoch=16), refs, [], sys.argv[2]).run()\n"
    )
    proc = subprocess.Popen([sys.executable, str(script), str(shapes), str(run_dir)])
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "checkpoint.pt").exists():
            assert proc.poll() is None, "training exited before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.2)
        time.sleep(0.5)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)  # plain data and tensors only
    killed_at = checkpoint["epoch"]
    assert 1 <= killed_at < 30
    resumed = Trainer(small_config(epochs=killed_at + 1, samples_per_epoch=16), folder_objects(shapes), [], run_dir)
    assert resumed.epoch == killed_at and resumed.step == killed_at * 4
    began = time.monotonic()
    result = resumed.run()
    sitting = time.monotonic() - began
    assert result.epochs_done == killed_at + 1 and len(result.history) == killed_at + 1
    # The clock goes on from the killed sitting instead of starting again at zero.
    assert checkpoint["seconds"] >= 60 * checkpoint["history"][-1]["minutes"] > 0
    assert abs(result.seconds - (checkpoint["seconds"] + sitting)) < 1.0
    minutes = [row["minutes"] for row in result.history]
    assert minutes == sorted(minutes) and minutes[-1] * 60 > checkpoint["seconds"]


def test_first_version_is_promoted_and_carries_a_model_card(shapes, tmp_path):
    store = WeightsStore(tmp_path / "store", shipped_dir=tmp_path / "nothing-shipped")
    refs = folder_objects(shapes)
    request = TrainRequest(
        refs,
        source={"kind": "folder", "path": str(shapes), "hash": "abc123"},
        config=small_config(),
        init="imagenet:lite0",
        name="first",
    )
    outcome = train_and_promote(request, store=store)
    assert outcome.promoted and store.current().name == "first"
    assert store.get("first").input_size == 64  # the version works at the size it was trained at
    card = store.get("first").card
    assert card["data"]["hash"] == "abc123" and card["data"]["train_objects"] == 10
    assert card["data"]["val_objects"] == 2 and card["hyper_parameters"]["batch_size"] == 4
    assert card["parent"] == "imagenet:lite0" and card["duration_minutes"] >= 0
    assert len(card["history"]) == 1 and "val_miou" in card["metrics"]
    # the store refuses the version's file once it is cut short
    path = store.get("first").path
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(WeightsError, match="truncated or corrupt"):
        store.load("first")


def make_bsds(root: Path) -> Path:
    """One BSDS-style picture: a sky band spanning the width, a ground band, a box object."""
    (root / "images").mkdir(parents=True)
    (root / "segmentations").mkdir()
    labels = np.full((60, 80), 2, np.uint16)  # ground
    labels[:20] = 1  # sky: touches left and right
    labels[30:50, 30:50] = 3  # the object: touches no border
    labels[55:, 70:] = 4  # a corner patch: two adjacent borders, kept
    cv2.imwrite(str(root / "images" / "1001.jpg"), np.zeros((60, 80, 3), np.uint8))
    cv2.imwrite(str(root / "segmentations" / "1001_1.png"), labels)
    return root


def test_fine_tuning_keeps_the_parent_working_size_threshold_and_trim(shapes, tmp_path):
    store = WeightsStore(tmp_path / "store", shipped_dir=tmp_path / "nothing-shipped")
    store.add_version(
        constant_model(20.0), "lite0", name="parent-72", input_size=72, threshold=0.65, trim=1, make_current=True
    )
    request = TrainRequest(
        folder_objects(shapes),
        source={"kind": "folder", "hash": "x"},
        config=small_config(resolution=None, samples_per_epoch=8),
        init="parent-72",
        name="child",
    )
    outcome = train_and_promote(request, store=store)
    assert (outcome.version.input_size, outcome.version.threshold, outcome.version.trim) == (72, 0.65, 1)
    assert request.config == small_config(resolution=None, samples_per_epoch=8)  # read, never changed
    assert request.refs == folder_objects(shapes)
    assert outcome.version.card["hyper_parameters"]["trim"] == 1  # validated as it will be used


def test_bsds_background_regions_can_be_left_out(tmp_path):
    from dextr_backend.data.objects import bsds_regions

    root = make_bsds(tmp_path / "bsds")
    assert sorted(r.label for r in bsds_regions(root)) == [1, 2, 3, 4]
    assert sorted(r.label for r in bsds_regions(root, drop_background=True)) == [3, 4]


def test_bsds_small_regions_can_be_left_out(tmp_path):
    from dextr_backend.data.objects import bsds_regions

    root = make_bsds(tmp_path / "bsds")  # areas: sky 33 %, ground 57 %, object 8 %, corner 1 %
    assert sorted(r.label for r in bsds_regions(root, min_area=0.05)) == [1, 2, 3]
    assert sorted(r.label for r in bsds_regions(root, min_area=0.05, drop_background=True)) == [3]
    with pytest.raises(InputError, match="minimum region area"):
        bsds_regions(root, min_area=0.9)


def test_the_run_folder_is_keyed_by_the_labels_content(shapes, tmp_path):
    """Labels corrected before a retry change the key (the paths stay the same), so a run never
    resumes a checkpoint trained on the old masks; the same files elsewhere resume it."""
    import shutil

    from dextr_backend.data.objects import objects_key

    before = objects_key(folder_objects(shapes))
    copy = shutil.copytree(shapes, tmp_path / "elsewhere")
    assert objects_key(folder_objects(copy)) == before
    mask = cv2.imread(str(shapes / "masks" / "img03.png"), cv2.IMREAD_GRAYSCALE)
    mask = cv2.erode(mask, np.ones((5, 5), np.uint8))  # a corrected outline, same file name
    cv2.imwrite(str(shapes / "masks" / "img03.png"), mask)
    assert objects_key(folder_objects(shapes)) != before


def test_runs_on_differently_filtered_objects_get_their_own_run_folder(tmp_path):
    """The run folder is keyed by the objects, so a run with another filter on the same folder
    never resumes this one's checkpoint."""
    from dextr_backend.data.objects import bsds_regions, objects_key

    root = make_bsds(tmp_path / "bsds")
    keys = {
        objects_key(bsds_regions(root)),
        objects_key(bsds_regions(root, min_area=0.05)),
        objects_key(bsds_regions(root, drop_background=True)),
    }
    assert len(keys) == 3
    assert objects_key(bsds_regions(root)) == objects_key(bsds_regions(root))


def constant_model(logit: float) -> dict:
    """lite0 whose last layer ignores its input: +logit everywhere (the clicks' whole box) or
    -logit (nothing). Deterministic stand-ins for a passable and a useless model."""
    model = build_model("lite0")
    final = model.decoder.head[-1]
    torch.nn.init.zeros_(final.weight)
    torch.nn.init.constant_(final.bias, logit)
    return model.state_dict()


def test_progress_moves_within_an_epoch(shapes, tmp_path):
    rows = []
    Trainer(
        small_config(samples_per_epoch=96), folder_objects(shapes), [], tmp_path / "run", on_progress=rows.append
    ).run()
    steps = [r["step"] for r in rows]
    assert len(rows) >= 2 and steps == sorted(steps) and steps[0] < 24
    assert all(r["epoch"] == 1 and r["steps_per_epoch"] == 24 and r["loss"] > 0 for r in rows)


def test_a_first_epoch_cut_short_is_not_promoted(shapes, tmp_path):
    """A time budget that ends the run inside its first epoch leaves nothing judged on a full epoch."""
    store = WeightsStore(tmp_path / "store", shipped_dir=tmp_path / "nothing-shipped")
    store.add_version(constant_model(-20.0), "lite0", name="empty", make_current=True)
    store.add_version(constant_model(20.0), "lite0", name="whole-box")
    outcome = train_and_promote(
        TrainRequest(
            folder_objects(shapes),
            source={"kind": "folder", "hash": "x"},
            config=small_config(lr=0.0, max_minutes=1e-6),
            init="whole-box",
            name="cut",
            val_fraction=0.25,
            min_val_objects=2,
        ),
        store=store,
    )
    assert outcome.val_miou > outcome.baseline_val_miou  # better, yet not promoted:
    assert outcome.epochs_done == 0 and not outcome.promoted and store.current().name == "empty"
    assert "no full epoch finished (stopped: time budget)" in outcome.reason
    assert store.get("cut").card["decision"] == outcome.reason


@pytest.mark.slow
def test_too_few_validation_objects_are_not_promoted(shapes, tmp_path):
    store = WeightsStore(tmp_path / "store", shipped_dir=tmp_path / "nothing-shipped")
    store.add_version(constant_model(-20.0), "lite0", name="empty", make_current=True)
    store.add_version(constant_model(20.0), "lite0", name="whole-box")
    refs = folder_objects(shapes)
    few = train_and_promote(
        TrainRequest(
            refs,
            source={"kind": "folder", "hash": "x"},
            config=small_config(lr=0.0),
            init="whole-box",
            name="few",
            min_val_objects=3,
        ),
        store=store,
    )
    assert few.val_objects == 2 and not few.promoted and store.current().name == "empty"
    assert "only 2 validation objects, fewer than 3 (DEXTR_TRAIN_MIN_VAL_OBJECTS)" in few.reason
    assert "on the 2 held-out objects it scores" in few.reason and "vs 0.0 for empty" in few.reason  # the numbers
    enough = train_and_promote(
        TrainRequest(
            refs,
            source={"kind": "folder", "hash": "x"},
            config=small_config(lr=0.0),
            init="whole-box",
            name="enough",
            min_val_objects=2,
        ),
        store=store,
    )
    assert enough.promoted and enough.reason.startswith("Promoted: on the 2 held-out objects")
    assert enough.summary()["reason"] == enough.reason


@pytest.mark.slow
def test_a_worse_model_is_not_promoted(shapes, tmp_path):
    store = WeightsStore(tmp_path / "store", shipped_dir=tmp_path / "nothing-shipped")
    store.add_version(constant_model(20.0), "lite0", name="whole-box", make_current=True)
    store.add_version(constant_model(-20.0), "lite0", name="empty")
    # Fine-tuning "empty" with a zero learning rate keeps it empty: IoU 0 against the box's > 0.
    frozen = small_config(lr=0.0)
    outcome = train_and_promote(
        TrainRequest(
            folder_objects(shapes), source={"kind": "folder", "hash": "x"}, config=frozen, init="empty", name="worse"
        ),
        store=store,
    )
    assert outcome.val_miou == 0.0 < outcome.baseline_val_miou
    assert not outcome.promoted and store.current().name == "whole-box"
    assert store.get("worse").card["promoted"] is False and store.get("worse").parent == "empty"
    forced = train_and_promote(
        TrainRequest(
            folder_objects(shapes),
            source={"kind": "folder", "hash": "x"},
            config=small_config(lr=0.0),
            init="empty",
            name="forced",
            force=True,
        ),
        store=store,
    )
    assert forced.promoted and store.current().name == "forced"
    assert store.get("forced").card["forced"] is True


def test_a_guard_folder_is_scored_for_both_versions_and_recorded(shapes, tmp_path):
    store = WeightsStore(tmp_path / "store", shipped_dir=tmp_path / "nothing-shipped")
    store.add_version(constant_model(-20.0), "lite0", name="empty", make_current=True)
    store.add_version(constant_model(20.0), "lite0", name="whole-box")
    guard = make_shapes(tmp_path / "guard", n=4, seed=7)  # other pictures, never trained on
    outcome = train_and_promote(
        TrainRequest(
            folder_objects(shapes),
            source={"kind": "folder", "hash": "x"},
            config=small_config(lr=0.0),
            init="whole-box",
            name="boxed",
            guard=guard,
        ),
        store=store,
    )
    assert outcome.baseline_guard_miou == 0.0 < outcome.guard_miou  # empty scores nothing; the box does
    assert outcome.promoted and store.current().name == "boxed"
    version = store.get("boxed")
    assert version.metrics["guard_miou"] == round(outcome.guard_miou, 2)
    assert version.metrics["baseline_guard_miou"] == 0.0
    assert version.card["guard"] == {"path": str(guard), "objects": 4}
    assert [row["epoch"] for row in version.card["history"]] == [1]
    assert 0 < version.card["history"][0]["guard_miou"] <= 100  # watched each epoch
    assert outcome.summary()["guard_miou"] == round(outcome.guard_miou, 2)
    guard_exam = version.card["promotion"]["exams"][1]  # 4 objects x 3 click sets, paired
    assert guard_exam["name"] == "guard" and (guard_exam["objects"], guard_exam["variants"]) == (4, 3)
    assert guard_exam["gain"] == pytest.approx(outcome.guard_miou, abs=1e-3) and guard_exam["low"] > 0


def test_a_bad_guard_folder_fails_before_training(shapes, tmp_path):
    store = WeightsStore(tmp_path / "store", shipped_dir=tmp_path / "nothing-shipped")
    (tmp_path / "not-a-benchmark").mkdir()
    with pytest.raises(InputError, match="not-a-benchmark"):
        train_and_promote(
            TrainRequest(
                folder_objects(shapes),
                source={"kind": "folder", "hash": "x"},
                config=small_config(),
                init="imagenet:lite0",
                guard=tmp_path / "not-a-benchmark",
            ),
            store=store,
        )
    assert store.versions() == []  # nothing trained, nothing written


def test_cross_validation_folds_are_whole_images_each_examined_once(shapes):
    from dextr_backend.training.crossval import cross_validation

    refs = folder_objects(shapes)
    plan = cross_validation(refs, 2)
    folds, shipped = plan.parts[:-1], plan.shipped
    assert [p.name for p in plan.parts] == ["fold 1 of 2", "fold 2 of 2", "all 12 objects"]
    assert sorted(r.source for r in plan.exam_objects) == sorted(r.source for r in refs)  # each once
    for fold in folds:
        assert not {r.image for r in fold.train} & {r.image for r in fold.test} and fold.train and fold.test
    assert shipped.train == refs and shipped.test == []
    assert plan.where == "12 labelled objects (2-fold cross-validation)"
    again = cross_validation(refs[::-1], 2)  # the folds depend on the pictures only
    assert [sorted(r.image for r in p.test) for p in again.parts] == [
        sorted(r.image for r in p.test) for p in plan.parts
    ]
    with pytest.raises(InputError, match="at least 2 images"):
        cross_validation(refs[:1], 2)


def test_a_fold_model_trains_its_share_of_the_schedule(shapes, tmp_path):
    """A fold of k trains on (k-1)/k of the labels, for (k-1)/k of the epochs, its warm-up the same
    share of its steps; the time budget and the run's epoch count follow."""
    from dextr_backend.training.crossval import cross_validation, fold_epochs, part_config
    from dextr_backend.training.plan_runner import Listeners, PlanRunner, Reporter
    from dextr_backend.training.trainer import TrainConfig

    plan = cross_validation(folder_objects(shapes), 2)
    config = TrainConfig(epochs=10, warmup_steps=100, max_minutes=30.0)
    schedules = [(c.epochs, c.warmup_steps) for c in (part_config(config, p) for p in plan.parts)]
    assert schedules == [(5, 50), (5, 50), (10, 100)]
    assert [fold_epochs(e, k) for e, k in ((10, 2), (10, 3), (1, 2), (6, 5))] == [5, 7, 1, 5]
    assert Reporter(config, plan, Listeners()).total == 20
    runner = PlanRunner(config, plan, tmp_path, None, "cpu", None, Reporter(config, plan, Listeners()), None, False)
    assert [runner.part_config(i).max_minutes for i in range(3)] == [7.5, 7.5, 15.0]
    assert runner.key(plan.parts[0])["epochs"] == 5 and runner.key(plan.shipped)["epochs"] == 10


@pytest.mark.slow
def test_a_cross_validated_run_ships_every_label_and_resumes_after_its_folds(shapes, tmp_path):
    """Every object is examined by a fold model that never trained on it, the shipped version trains
    on all 12, and a run that crashed after its folds does not train them again."""
    store = WeightsStore(tmp_path / "store", shipped_dir=tmp_path / "nothing-shipped")
    store.add_version(constant_model(-20.0), "lite0", name="empty", make_current=True)
    store.add_version(constant_model(20.0), "lite0", name="whole-box")
    stages, epochs = [], []

    def crash_before_the_last_training(stage):
        stages.append(stage)
        if stage == "training on all 12 objects" and stages.count(stage) == 1:
            raise RuntimeError("worker lost")

    request = TrainRequest(
        folder_objects(shapes),
        source={"kind": "folder", "hash": "x"},
        config=small_config(lr=0.0),
        init="whole-box",
        name="cv",
        run_dir=tmp_path / "run",
        folds=2,
    )
    listeners = Listeners(on_stage=crash_before_the_last_training, on_epoch=epochs.append)
    with pytest.raises(RuntimeError, match="worker lost"):
        train_and_promote(request, store=store, listeners=listeners)
    assert stages.count("training fold 1 of 2") == stages.count("training fold 2 of 2") == 1
    outcome = train_and_promote(request, store=store, listeners=listeners)  # the same request resumes
    assert stages.count("training fold 1 of 2") == stages.count("training fold 2 of 2") == 1  # kept
    assert [(e["epoch"], e["epochs"], e["part"]) for e in epochs] == [
        (1, 3, "fold 1 of 2"),
        (2, 3, "fold 2 of 2"),
        (3, 3, "all 12 objects"),
    ]
    assert outcome.promoted and outcome.val_objects == 12
    card = store.get("cv").card
    assert card["data"]["train_objects"] == 12 and card["data"]["val_objects"] == 12
    assert card["evaluation"]["kind"] == "cross-validation" and card["evaluation"]["click_sets"] == 3
    assert [f["part"] for f in card["folds"]] == ["fold 1 of 2", "fold 2 of 2"]
    assert card["promotion"]["exams"][0]["objects"] == 12 and card["rule"].startswith("promote unless")
    assert not (tmp_path / "run").exists()


def test_fresh_keeps_the_name_and_a_second_fresh_run_succeeds(shapes, weights_dir, capsys):
    """Issue 29: ``--fresh`` used to overwrite ``--name`` with "best.pt" (a loop variable), so the
    version was misnamed and a second ``--fresh`` run failed after training."""
    from dextr_backend.cli import main

    args = [
        "train",
        "--dataset",
        str(shapes),
        "--init",
        "imagenet:lite0",
        "--epochs",
        "1",
        "--threads",
        "1",
        "--samples-per-epoch",
        "8",
        "--batch-size",
        "4",
        "--val-objects",
        "2",
        "--resolution",
        "64",
        "--fresh",
    ]
    assert main(args + ["--name", "fresh-1"]) == 0
    assert main(args + ["--name", "fresh-2"]) == 0
    versions = {v.name: v for v in WeightsStore(weights_dir).versions() if not v.shipped}
    assert set(versions) == {"fresh-1", "fresh-2"}
    assert versions["fresh-1"].path.name == "fresh-1.pt" and versions["fresh-2"].path.name == "fresh-2.pt"
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["version"] == "fresh-2"


@pytest.mark.slow
def test_train_command_records_a_version(shapes, weights_dir, capsys, tmp_path):
    from dextr_backend.cli import main

    guard = make_shapes(tmp_path / "guard", n=3, seed=5)
    code = main(
        [
            "train",
            "--dataset",
            str(shapes),
            "--init",
            "imagenet:lite0",
            "--epochs",
            "1",
            "--threads",
            "1",
            "--samples-per-epoch",
            "8",
            "--batch-size",
            "4",
            "--val-objects",
            "2",
            "--name",
            "cli-v1",
            "--guard",
            str(guard),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(out[-1])
    assert summary["version"] == "cli-v1" and 0 <= summary["val_miou"] <= 100
    assert 0 <= summary["guard_miou"] <= 100 and "guard objects" in out[-3]
    assert out[-2].startswith("rule: promote unless measurably worse")
    assert main(["weights", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert "cli-v1" in json.dumps(listed)
    assert not (weights_dir / "runs").exists() or not any((weights_dir / "runs").iterdir())


def test_train_command_needs_a_source(capsys, weights_dir, monkeypatch):
    from dextr_backend.cli import main

    monkeypatch.delenv("LABEL_STUDIO_URL", raising=False)
    assert main(["train", "--project", "3"]) == 2
    assert "--labelstudio-url" in capsys.readouterr().err


def test_train_command_refuses_a_bad_average_decay(shapes, capsys, weights_dir):
    from dextr_backend.cli import main

    assert main(["train", "--dataset", str(shapes), "--ema", "1.5"]) == 2
    assert "--ema" in capsys.readouterr().err


def test_weight_average_follows_the_model_slowly():
    from dextr_backend.training.ema import WeightAverage

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    avg = WeightAverage(model, decay=0.75)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model[0].weight.add_(4.0)
    model.train()
    model(torch.randn(5, 2))  # moves the BatchNorm statistics and its counter
    avg.update(model)
    now = model.state_dict()
    assert torch.allclose(avg.state["0.weight"], start["0.weight"] + 1.0)  # a quarter of the step
    expected_mean = 0.75 * start["1.running_mean"] + 0.25 * now["1.running_mean"]
    assert torch.allclose(avg.state["1.running_mean"], expected_mean)
    assert int(avg.state["1.num_batches_tracked"]) == 1  # counters are copied
    with pytest.raises(ValueError):
        WeightAverage(model, decay=1.0)


def test_weight_average_warms_up_from_a_fresh_start():
    """From ImageNet the first steps' average must follow the network, not keep its random decoder."""
    from dextr_backend.training.ema import WeightAverage

    model = torch.nn.Linear(2, 2)
    start = model.weight.detach().clone()
    avg = WeightAverage(model, decay=0.75, warmup=True)
    with torch.no_grad():
        model.weight.add_(4.0)
    avg.update(model)  # decay 1/10 at first
    assert torch.allclose(avg.state["weight"], start + 3.6)
    decays = []
    for _ in range(40):
        decays.append(avg.current_decay())
        avg.update(model)
    assert decays == sorted(decays) and decays[0] < decays[-1] == 0.75  # rises, then capped


def test_moving_average_is_validated_shipped_and_resumed(shapes, tmp_path):
    refs = folder_objects(shapes)
    train, val = split(refs)
    trainer = Trainer(small_config(ema_decay=0.9), train, val, tmp_path / "run")
    result = trainer.run()
    raw = trainer.model.state_dict()
    assert result.best_val_miou is not None
    for key, value in result.state_dict.items():  # the shipped weights are the average, not the last step
        assert torch.equal(value, trainer.ema.state[key])
    assert any(not torch.equal(raw[k], v) for k, v in result.state_dict.items() if v.is_floating_point())
    resumed = Trainer(small_config(ema_decay=0.9, epochs=2), train, val, tmp_path / "run")
    assert all(torch.equal(resumed.ema.state[k], v) for k, v in trainer.ema.state.items())
    assert trainer.ema.warmup and resumed.ema.updates == trainer.ema.updates == trainer.step > 0


def test_a_runs_checkpoint_imports_as_its_last_average(shapes, tmp_path):
    refs = folder_objects(shapes)
    train, val = split(refs)
    trainer = Trainer(small_config(ema_decay=0.9), train, val, tmp_path / "run")
    trainer.run()
    store = WeightsStore(tmp_path / "weights")
    version = store.import_file(trainer.checkpoint_path, name="last-epoch")
    loaded = read_state_file(version.path)
    assert version.arch == "lite0" and set(loaded) == set(trainer.ema.state)
    assert all(torch.equal(loaded[k], v) for k, v in trainer.ema.state.items())
    raw = trainer.model.state_dict()
    assert any(not torch.equal(raw[k], v) for k, v in loaded.items() if v.is_floating_point())


def test_average_added_on_resume_starts_from_the_resumed_weights(shapes, tmp_path):
    refs = folder_objects(shapes)
    plain = Trainer(small_config(), refs, [], tmp_path / "run")
    plain.run()
    resumed = Trainer(small_config(ema_decay=0.9, epochs=2), refs, [], tmp_path / "run")
    trained = resumed.model.state_dict()
    assert all(torch.equal(resumed.ema.state[k], v) for k, v in trained.items())


def test_bf16_training_on_an_emulating_cpu_warns(shapes, tmp_path, caplog, monkeypatch):
    import dextr_backend.predictor as predictor_module

    monkeypatch.setattr(predictor_module, "cpu_has_native_bf16", lambda: False)
    with caplog.at_level("WARNING", logger="dextr_backend.predictor"):
        Trainer(small_config(cpu_bf16=True), folder_objects(shapes), [], tmp_path / "run", device="cpu")
    assert "no native bfloat16" in caplog.text


# ---------------------------------------------------------------- growing lite0 into lite0r, frozen parts


def test_frozen_parts_keep_their_weights_and_statistics(shapes, tmp_path):
    from dextr_backend.models import grow_state

    refs = folder_objects(shapes)
    parent = build_model("lite0").state_dict()
    trainer = Trainer(
        small_config(arch="lite0r", freeze=("backbone", "decoder"), lr=1e-2),
        refs,
        [],
        tmp_path / "run",
        init_state=grow_state("lite0r", parent),
    )
    trainer.run()
    after = trainer.model.state_dict()
    for key, value in parent.items():  # weights and BatchNorm running statistics alike
        assert torch.equal(after[key], value), key
    assert torch.count_nonzero(after["refiner.out.weight"]) > 0  # the new part did learn


def test_freezing_an_unknown_part_or_everything_is_refused(shapes, tmp_path):
    refs = folder_objects(shapes)
    with pytest.raises(InputError, match="parts are backbone, decoder"):
        Trainer(small_config(freeze=("trunk",)), refs, [], tmp_path / "a")
    with pytest.raises(InputError, match="nothing left to train"):
        Trainer(small_config(freeze=("backbone", "decoder")), refs, [], tmp_path / "b")


def test_train_command_grows_a_version_into_lite0r(shapes, weights_dir, capsys):
    from dextr_backend.cli import main

    WeightsStore(weights_dir).add_version(
        build_model("lite0").state_dict(), "lite0", name="base", input_size=64, threshold=0.6, make_current=True
    )
    assert (
        main(
            [
                "train",
                "--dataset",
                str(shapes),
                "--init",
                "base",
                "--arch",
                "lite0r",
                "--freeze",
                "trunk",
                "--epochs",
                "1",
                "--threads",
                "1",
            ]
        )
        == 2
    )
    assert "cannot freeze trunk" in capsys.readouterr().err
    code = main(
        [
            "train",
            "--dataset",
            str(shapes),
            "--init",
            "base",
            "--arch",
            "lite0r",
            "--threads",
            "1",
            "--freeze",
            "backbone,decoder",
            "--epochs",
            "1",
            "--samples-per-epoch",
            "8",
            "--batch-size",
            "4",
            "--val-objects",
            "2",
            "--name",
            "grown",
            "--force",
        ]
    )
    assert code == 0
    grown = WeightsStore(weights_dir).get("grown")
    assert grown.arch == "lite0r" and grown.parent == "base"
    assert grown.input_size == 64 and grown.threshold == 0.6  # inherited from the parent
    assert grown.card["hyper_parameters"]["freeze"] == ["backbone", "decoder"]


def test_a_run_folder_is_not_resumed_with_other_settings(shapes, tmp_path):
    refs = folder_objects(shapes)
    Trainer(small_config(), refs, [], tmp_path / "run").run()
    with pytest.raises(InputError, match="holds a run with other settings"):
        Trainer(small_config(freeze=("backbone",)), refs, [], tmp_path / "run")
    assert Trainer(small_config(epochs=2), refs, [], tmp_path / "run").epoch == 1  # same settings resume
