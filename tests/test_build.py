"""build.py: a weights version (or file) becomes a ready predictor, as the version and the settings say."""

from __future__ import annotations

import pytest
import torch

from dextr_backend.build import build_predictor, make_predictor, model_from, predictor_for
from dextr_backend.models import build_model
from dextr_backend.settings import Settings
from dextr_backend.weights import WeightsStore


@pytest.fixture()
def store(tmp_path) -> WeightsStore:
    torch.manual_seed(0)
    store = WeightsStore(tmp_path / "store", shipped_dir=tmp_path / "nothing-shipped")
    store.add_version(build_model("lite0").state_dict(), "lite0", name="plain", input_size=64, make_current=True)
    store.add_version(build_model("lite0").state_dict(), "lite0", name="trimmed", threshold=0.65, trim=1)
    return store


def test_flip_follows_the_environment(monkeypatch, store):
    monkeypatch.setenv("DEXTR_FLIP", "1")
    assert build_predictor(store=store, device="cpu").flip is True
    monkeypatch.setenv("DEXTR_FLIP", "0")
    assert build_predictor(store=store, device="cpu").flip is False


def test_settings_choose_version_device_flip_and_bf16(store):
    settings = Settings(weights="trimmed", device="cpu", flip=True, cpu_bf16=True)
    predictor = build_predictor(settings=settings, store=store)
    assert (predictor.version, predictor.threshold, predictor.postprocess.trim) == ("trimmed", 0.65, 1)
    assert predictor.flip is True and predictor.cpu_bf16 is True and predictor.device.type == "cpu"
    plain = build_predictor("plain", settings=settings, store=store, flip=False)
    assert (plain.version, plain.input_size, plain.flip) == ("plain", 64, False)


def test_the_settings_store_is_the_default(tmp_path, store):
    assert build_predictor(settings=Settings(weights_dir=str(store.root), device="cpu")).version == "plain"


def test_predictor_for_and_make_predictor_agree(store):
    loaded = store.load("trimmed")
    a = predictor_for(loaded, device="cpu")
    b = make_predictor(
        model_from(loaded.arch, loaded.state_dict),
        loaded.arch,
        loaded.input_size,
        loaded.threshold,
        loaded.meta.trim,
        version=loaded.version,
        device="cpu",
    )
    for p in (a, b):
        assert (p.version, p.threshold, p.postprocess.trim, p.corrections) == ("trimmed", 0.65, 1, False)
    assert make_predictor(build_model("lite0c"), "lite0c", 64, 0.5, device="cpu").corrections is True
