"""The predictor on real tensors: shapes, batching, device handling and input checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dextr_backend.errors import InputError
from dextr_backend.models import build_model
from dextr_backend.predictor import DextrPredictor, cpu_has_native_bf16


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    return DextrPredictor(build_model("lite0"), input_size=64, threshold=0.5, device="cpu")


@pytest.fixture()
def scene():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    points = np.array([[30, 60], [110, 62], [70, 20], [72, 100]], dtype=float)
    return image, points


def test_predict_returns_image_sized_mask_probabilities_and_score(predictor, scene):
    image, points = scene
    pred = predictor.predict(image, points)
    assert pred.mask.shape == (120, 160) and pred.mask.dtype == bool
    assert pred.probabilities.shape == (120, 160) and pred.probabilities.dtype == np.float32
    assert 0.0 <= pred.probabilities.min() and pred.probabilities.max() <= 1.0
    assert 0.0 <= pred.score <= 1.0


def test_nothing_outside_the_points_box(predictor, scene):
    image, points = scene
    pred = predictor.predict(image, points)
    outside = np.ones((120, 160), bool)
    outside[20:101, 30:111] = False
    assert not pred.probabilities[outside].any()
    assert not pred.mask[outside].any()


def test_batch_matches_single_calls(predictor, scene):
    image, points = scene
    other = points + [5, 3]
    singles = [predictor.predict(image, p).probabilities for p in (points, other)]
    many = [p.probabilities for p in predictor.predict_objects(image, [points, other])]
    for a, b in zip(singles, many):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_batch_over_several_images_of_different_sizes(predictor, scene):
    image, points = scene
    small = image[:80, :100]
    preds = predictor.predict_batch([(image, points), (small, [[10, 40], [90, 40], [50, 5], [50, 75]])])
    assert [p.mask.shape for p in preds] == [(120, 160), (80, 100)]


def test_gray_and_rgba_images_are_accepted(predictor, scene):
    image, points = scene
    assert predictor.predict(image[:, :, 0], points).mask.shape == (120, 160)
    rgba = np.concatenate([image, np.full((120, 160, 1), 255, np.uint8)], axis=2)
    np.testing.assert_allclose(
        predictor.predict(rgba, points).probabilities, predictor.predict(image, points).probabilities, atol=1e-5
    )


@pytest.mark.parametrize(
    "points, message",
    [
        ([[1, 1], [2, 2], [3, 3]], "at least 4"),
        ([[1, 1], [2, 2], [3, 3], [500, 3]], "outside"),
        ([[1, 1], [2, 2], [3, 3], [-1, 3]], "outside"),
        ([[1, 1], [2, 2], [3, 3], [float("nan"), 3]], "finite"),
        ("not points", "pairs"),
    ],
)
def test_bad_points_raise_clear_errors(predictor, scene, points, message):
    image, _ = scene
    with pytest.raises(InputError, match=message):
        predictor.predict(image, points)


def test_bad_images_raise_clear_errors(predictor, scene):
    _, points = scene
    with pytest.raises(InputError, match="uint8"):
        predictor.predict(np.zeros((120, 160, 3), np.float32), points)
    with pytest.raises(InputError, match="RGB"):
        predictor.predict(np.zeros((120, 160, 2), np.uint8), points)


def test_more_than_four_points_are_used(predictor, scene):
    image, points = scene
    five = np.vstack([points, [[70, 60]]])
    a = predictor.predict(image, points).probabilities
    b = predictor.predict(image, five).probabilities
    assert not np.allclose(a, b)


def test_cpu_bf16_stays_close_to_fp32(predictor, scene):
    image, points = scene
    fp32 = predictor.predict(image, points).probabilities
    bf16 = DextrPredictor(predictor.model, 64, threshold=0.5, device="cpu", cpu_bf16=True)
    assert np.abs(bf16.predict(image, points).probabilities - fp32).max() < 0.1


@pytest.mark.parametrize(
    "flags, expected",
    [
        ("flags\t\t: fpu sse avx avx2 fma\n", False),  # AVX2-only EPYC: emulated
        ("flags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n", True),
        ("flags\t\t: fpu avx2 amx_tile amx_bf16\n", True),
        ("processor\t: 0\n", None),  # no flags line: unknown
    ],
)
def test_native_bf16_is_read_from_the_cpu_flags(tmp_path, flags, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\n" + flags)
    assert cpu_has_native_bf16(str(cpuinfo)) is expected
    assert cpu_has_native_bf16(str(tmp_path / "missing")) is None


def test_bf16_on_an_emulating_cpu_warns(predictor, caplog, monkeypatch):
    import dextr_backend.predictor as module

    monkeypatch.setattr(module, "cpu_has_native_bf16", lambda: False)
    with caplog.at_level("WARNING", logger="dextr_backend.predictor"):
        DextrPredictor(predictor.model, 64, device="cpu", cpu_bf16=True)
    assert "no native bfloat16" in caplog.text


class LeftToRight(torch.nn.Module):
    """Logits rising from -4 on the crop's left edge to +4 on its right: anything but mirror-symmetric."""

    def forward(self, x):
        ramp = torch.linspace(-4.0, 4.0, x.shape[-1])
        return ramp.expand(x.shape[0], 1, x.shape[-2], x.shape[-1]).clone()


def test_flip_averages_in_the_mirrored_crop(scene):
    image, points = scene
    plain = DextrPredictor(LeftToRight(), 64, threshold=0.5, device="cpu", flip=False).predict(image, points)
    flipped = DextrPredictor(LeftToRight(), 64, threshold=0.5, device="cpu", flip=True).predict(image, points)
    row = plain.probabilities[60, 30:111]
    assert row[-1] - row[0] > 0.5  # without the flip: a left-to-right ramp
    np.testing.assert_allclose(flipped.probabilities[20:101, 30:111], 0.5, atol=1e-6)  # mirrored: cancels out


def test_the_predictor_reads_no_environment(monkeypatch):
    """Flip and bf16 come from its caller (``build.build_predictor`` passes the settings')."""
    monkeypatch.setenv("DEXTR_FLIP", "1")
    monkeypatch.setenv("DEXTR_CPU_BF16", "1")
    predictor = DextrPredictor(LeftToRight(), 64, device="cpu")
    assert predictor.flip is False and predictor.cpu_bf16 is False
