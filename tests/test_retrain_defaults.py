"""The retraining job's defaults: which images it holds out, and the schedule it trains for
(``benchmarks/retrain_labelstudio.py`` measures what they give)."""

from __future__ import annotations

import pytest

from dextr_backend.data.objects import ObjectRef
from dextr_backend.data.splits import hold_out_split, image_rank
from dextr_backend.errors import InputError
from dextr_backend.labelstudio.retrain import folds_for, retrain_config
from dextr_backend.settings import Settings


def refs_of(images: int, per_image: int = 1, first: int = 1) -> list[ObjectRef]:
    """Objects as the job's Label Studio export names them: ``images/<task id>.png``."""
    return [
        ObjectRef(f"/x/images/{t}.png", f"/x/masks/{k}_{t}.png", k, 100, "half")
        for t in range(first, first + images)
        for k in range(per_image)
    ]


@pytest.fixture()
def clean_env(monkeypatch):
    for name in (
        "DEXTR_TRAIN_EPOCHS",
        "DEXTR_TRAIN_SAMPLES",
        "DEXTR_TRAIN_VAL_FRACTION",
        "DEXTR_TRAIN_PATIENCE",
        "DEXTR_TRAIN_MIN_VAL_OBJECTS",
        "DEXTR_TRAIN_MAX_MINUTES",
    ):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize("images, held", [(2, 1), (3, 2), (4, 3), (10, 3), (25, 4), (50, 8), (200, 30)])
def test_the_job_holds_out_a_steady_share_but_at_least_three_objects(images, held):
    refs = refs_of(images)
    train, val = hold_out_split(refs, 0.15, 3)
    val_images = {r.image for r in val}
    assert len(val_images) == held and len(val) == held
    assert val_images.isdisjoint(r.image for r in train) and len(train) + len(val) == len(refs)
    # the images held out are the first in is_validation's hash order, whatever order the tasks come in
    assert max(image_rank(i) for i in val_images) < min(image_rank(r.image) for r in train)
    assert hold_out_split(refs[::-1], 0.15, 3) == (train[::-1], val[::-1])


def test_images_with_several_objects_reach_the_floor_sooner():
    train, val = hold_out_split(refs_of(10, per_image=2), 0.15, 3)
    assert len({r.image for r in val}) == 2 and len(val) == 4 and len(train) == 16


def test_one_image_trains_and_validates_on_itself():
    train, val = hold_out_split(refs_of(1, per_image=3), 0.15, 3)
    assert train == val and len(train) == 3


def test_default_schedule_is_the_small_data_benchmarks(clean_env):
    settings = Settings.from_env()
    assert (settings.train_val_fraction, settings.train_min_val_objects) == (0.15, 3)
    for objects, samples in ((10, 160), (25, 160), (40, 160), (50, 200), (300, 1200), (5000, 2000)):
        config = retrain_config(settings, objects)
        assert config.samples_per_epoch == samples
        assert config.epochs == 10 and config.lr == 2e-3
        assert config.patience >= config.epochs  # no early stop on a handful of held-out objects
        assert config.resolution is None and config.freeze_bn is None  # the version's size; BN frozen < 500


def test_every_default_is_a_setting(clean_env):
    clean_env.setenv("DEXTR_TRAIN_EPOCHS", "3")
    clean_env.setenv("DEXTR_TRAIN_SAMPLES", "64")
    clean_env.setenv("DEXTR_TRAIN_PATIENCE", "1")
    clean_env.setenv("DEXTR_TRAIN_VAL_FRACTION", "0.3")
    settings = Settings.from_env()
    config = retrain_config(settings, 25)
    assert (config.epochs, config.samples_per_epoch, config.patience) == (3, 64, 1)
    assert settings.train_val_fraction == 0.3
    clean_env.setenv("DEXTR_TRAIN_VAL_FRACTION", "1.5")
    with pytest.raises(InputError, match="DEXTR_TRAIN_VAL_FRACTION"):
        Settings.from_env()


def test_small_label_sets_are_cross_validated_not_split(clean_env):
    """Under 60 objects the job decides by 2-fold cross-validation and ships a model trained on
    every label; from 60 on a 15 % hold-out is 9+ objects. Early stopping needs a hold-out."""
    settings = Settings.from_env()
    assert [folds_for(settings, n) for n in (3, 10, 25, 50, 59, 60, 200)] == [2, 2, 2, 2, 2, 0, 0]
    clean_env.setenv("DEXTR_TRAIN_PATIENCE", "2")
    assert folds_for(Settings.from_env(), 25) == 0


@pytest.mark.parametrize("keep_last", [True, False])
def test_the_job_ships_the_last_epoch_not_a_noisy_pick(tmp_path, monkeypatch, keep_last):
    """With a handful of held-out objects the best epoch by validation is mostly noise: a 25-label
    project's run kept epoch 3 of 6. Without patience the job ships the last epoch."""
    import torch
    from test_training import make_shapes, small_config

    from dextr_backend.data.objects import folder_objects
    from dextr_backend.models import build_model
    from dextr_backend.training import promotion
    from dextr_backend.training.trainer import Trainer
    from dextr_backend.weights.files import read_state_file
    from dextr_backend.weights.store import WeightsStore

    real_run, last = Trainer.run, {}

    def run_with_another_best(self):  # as if validation had picked an earlier epoch
        result = real_run(self)
        last.update({k: v.clone() for k, v in self.result_model().state_dict().items()})
        result.state_dict = {k: torch.zeros_like(v) for k, v in result.state_dict.items()}
        return result

    monkeypatch.setattr(Trainer, "run", run_with_another_best)
    store = WeightsStore(tmp_path / "store", shipped_dir=tmp_path / "nothing-shipped")
    torch.manual_seed(0)
    store.add_version(build_model("lite0").state_dict(), "lite0", name="base", input_size=64, make_current=True)
    outcome = promotion.train_and_promote(
        promotion.TrainRequest(
            folder_objects(make_shapes(tmp_path / "shapes")),
            source={"kind": "folder", "hash": "x"},
            config=small_config(samples_per_epoch=8, val_objects=200),
            val_fraction=0.15,
            hold_out_objects=3,
            keep_last=keep_last,
            force=True,
        ),
        store=store,
    )
    shipped = read_state_file(store.get(outcome.version.name).path)
    if keep_last:
        assert all(torch.equal(shipped[k], last[k]) for k in shipped) and any(v.any() for v in shipped.values())
        assert outcome.version.card["kept"] == "last epoch"
    else:
        assert not any(v.any() for v in shipped.values())
        assert outcome.version.card["kept"] == "best epoch by validation"
    assert outcome.val_objects == 3 and outcome.version.card["data"]["train_images"] == 9
