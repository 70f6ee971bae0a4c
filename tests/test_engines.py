"""CPU engines for pass 1 (issue 25): parity with torch on real objects, the checked cache of
exported graphs, and the fallback to torch when a runtime is missing or a graph cannot be made.

An engine is skipped only where its package is absent, unless ``DEXTR_REQUIRE_ENGINES=1`` (CI).
No timings here: ``benchmarks/latency.py`` prints them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys

import numpy as np
import pytest
import torch

from dextr_backend import build
from dextr_backend.build import build_predictor
from dextr_backend.data.benchmarks import load_dataset
from dextr_backend.engines import RUNTIMES, candidates, check_engine, runtimes
from dextr_backend.errors import InputError
from dextr_backend.geometry import extreme_points
from dextr_backend.models import build_model
from dextr_backend.settings import Settings
from dextr_backend.weights.exported import FOLDER, INDEX
from dextr_backend.weights.store import WeightsStore

REQUIRED = os.environ.get("DEXTR_REQUIRE_ENGINES") == "1"
SCENE = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
POINTS = [[60, 120], [260, 110], [160, 30], [150, 210]]


def need(name: str) -> None:
    """Skip where runtime ``name`` is not installed, unless CI requires every engine."""
    if not runtimes.importable(name):
        if REQUIRED:
            pytest.fail(f"DEXTR_REQUIRE_ENGINES=1 but {name} cannot be imported")
        pytest.skip(f"{name} is not installed (pip install {name})")


def predictor(root, engine: str, version: str | None = None, **kwargs):
    return build_predictor(version, settings=Settings(weights_dir=str(root), device="cpu"), engine=engine, **kwargs)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.fixture(scope="module")
def grabcut(shared_data):
    """5 real GrabCut objects and their extreme points, from the ground-truth masks."""
    objects = list(load_dataset(shared_data / "GrabCut", limit=5))
    assert len(objects) == 5
    from dextr_backend.imageio import read_image

    return [(read_image(o.image_path), extreme_points(o.mask)) for o in objects]


@pytest.fixture(scope="module")
def engines_root(tmp_path_factory):
    """One store for the parity tests, so the default version is exported once per runtime."""
    return tmp_path_factory.mktemp("engines-store")


@pytest.fixture(scope="module")
def torch_masks(grabcut, engines_root):
    reference = predictor(engines_root, "torch")
    return [reference.predict(image, points).mask for image, points in grabcut]


# --------------------------------------------------------------------------- parity
@pytest.mark.parametrize("name", RUNTIMES)
def test_each_engine_matches_torch_on_real_objects(name, grabcut, torch_masks, engines_root):
    need(name)
    engine = predictor(engines_root, name)
    assert engine.engine_name == name, "fell back to torch: see the warning in the log"
    assert engine.engine.threads == torch.get_num_threads()  # the same setting as torch's
    for (image, points), expected in zip(grabcut, torch_masks):
        assert iou(engine.predict(image, points).mask, expected) >= 0.999


@pytest.mark.parametrize("name", RUNTIMES)
def test_flip_runs_the_engine_on_the_mirrored_crop(name, grabcut, engines_root):
    need(name)
    flipped = predictor(engines_root, name, flip=True)
    reference = predictor(engines_root, "torch", flip=True)
    for image, points in grabcut[:2]:
        assert iou(flipped.predict(image, points).mask, reference.predict(image, points).mask) >= 0.999


def test_auto_takes_the_first_runtime_installed(engines_root):
    installed = [n for n in RUNTIMES if runtimes.importable(n)]
    if not installed and not REQUIRED:
        pytest.skip("neither openvino nor onnxruntime is installed")
    assert predictor(engines_root, "auto").engine_name == installed[0]


def test_cuda_is_torch_and_names_are_checked():
    assert candidates("openvino", "cuda") == () and candidates("auto", "cuda") == ()
    assert candidates("auto", "cpu") == RUNTIMES and candidates("torch", "cpu") == ()
    assert check_engine(" OpenVINO ") == "openvino" and check_engine("") == "auto"
    with pytest.raises(InputError, match="unknown engine"):
        check_engine("tensorrt")


def test_the_setting_is_read_and_checked(monkeypatch):
    monkeypatch.setenv("DEXTR_ENGINE", "onnxruntime")
    assert Settings.from_env().engine == "onnxruntime"
    monkeypatch.setenv("DEXTR_ENGINE", "fast")
    with pytest.raises(InputError, match="DEXTR_ENGINE"):
        Settings.from_env()
    monkeypatch.delenv("DEXTR_ENGINE")
    assert Settings.from_env().engine == "auto"


# --------------------------------------------------------------------------- the checked cache
def first_runtime() -> str:
    name = next((n for n in RUNTIMES if runtimes.importable(n)), None)
    if name is None:
        need(RUNTIMES[0])
    return str(name)


def graph_file(root):
    (path,) = (root / FOLDER).glob("*.onnx")
    return path


def recorded(root, path) -> str:
    return json.loads((root / FOLDER / INDEX).read_text())["graphs"][path.name]["sha256"]


@pytest.mark.parametrize("damage", ["altered", "truncated"])
def test_a_damaged_graph_is_refused_with_one_line_and_rebuilt(damage, weights_dir, caplog, monkeypatch):
    name = first_runtime()
    predictor(weights_dir, name)
    path = graph_file(weights_dir)
    good = path.read_bytes()
    assert hashlib.sha256(good).hexdigest() == recorded(weights_dir, path)
    if damage == "altered":
        data = bytearray(good)
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    else:
        path.write_bytes(good[: len(good) // 3])
    loaded: list[bytes] = []
    real_load = runtimes.load
    monkeypatch.setattr(runtimes, "load", lambda n, graph, t: loaded.append(graph) or real_load(n, graph, t))
    with caplog.at_level(logging.INFO):
        again = predictor(weights_dir, name)
    refused = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(refused) == 1 and "does not match its recorded sha256" in refused[0].getMessage()
    assert again.engine_name == name
    assert [hashlib.sha256(g).hexdigest() for g in loaded] == [hashlib.sha256(good).hexdigest()]  # never the bad one
    assert hashlib.sha256(path.read_bytes()).hexdigest() == recorded(weights_dir, path)  # rebuilt on disk
    again.predict(SCENE, POINTS)


def test_a_graph_without_a_record_is_not_loaded(weights_dir, monkeypatch):
    """A file dropped into the cache folder with no index entry is made again, never loaded."""
    name = first_runtime()
    predictor(weights_dir, name)
    path = graph_file(weights_dir)
    (weights_dir / FOLDER / INDEX).unlink()
    path.write_bytes(b"not a graph")
    assert predictor(weights_dir, name).engine_name == name
    assert hashlib.sha256(path.read_bytes()).hexdigest() == recorded(weights_dir, path)


# --------------------------------------------------------------------------- fallback
@pytest.fixture()
def fresh_warnings(monkeypatch):
    monkeypatch.setattr(build, "_WARNED", set())


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("engine", ["auto", "openvino", "onnxruntime"])
def test_an_unimportable_runtime_falls_back_to_torch_with_one_warning(
    engine, weights_dir, monkeypatch, caplog, fresh_warnings
):
    for name in RUNTIMES:
        monkeypatch.setitem(sys.modules, name, None)  # import raises ImportError
    with caplog.at_level(logging.WARNING):
        first = predictor(weights_dir, engine)
        second = predictor(weights_dir, engine)
    assert first.engine_name == second.engine_name == "torch"
    assert first.predict(SCENE, POINTS).mask.shape == SCENE.shape[:2]
    (line,) = warnings_of(caplog)
    assert "not installed" in line and "torch" in line


def test_a_failed_export_falls_back_to_torch_once(weights_dir, monkeypatch, caplog, fresh_warnings):
    name = first_runtime()
    monkeypatch.setitem(sys.modules, "onnx", None)  # torch's exporter needs it
    with caplog.at_level(logging.WARNING):
        assert predictor(weights_dir, name).engine_name == "torch"
        assert predictor(weights_dir, name).engine_name == "torch"
    (line,) = warnings_of(caplog)
    assert "cannot export" in line
    assert not list((weights_dir / FOLDER).glob("*.onnx"))


def test_a_runtime_that_cannot_compile_falls_back_to_torch(weights_dir, monkeypatch, caplog, fresh_warnings):
    name = first_runtime()

    def broken(*_):
        raise RuntimeError("no kernel for this op")

    monkeypatch.setattr(runtimes, "load", broken)
    with caplog.at_level(logging.WARNING):
        pred = predictor(weights_dir, name)
    assert pred.engine_name == "torch" and pred.predict(SCENE, POINTS).mask.shape == SCENE.shape[:2]
    (line,) = warnings_of(caplog)
    assert "cannot run" in line and "no kernel" in line


# --------------------------------------------------------------------------- what is exported
def add(root, arch: str, name: str) -> None:
    torch.manual_seed(0)
    WeightsStore(root).add_version(build_model(arch).state_dict(), arch, name=name)


def test_a_corrective_version_exports_pass_one_and_keeps_pass_two_in_torch(weights_dir, fresh_warnings):
    name = first_runtime()
    add(weights_dir, "lite0c", "corrective")
    engine = predictor(weights_dir, name, "corrective", corrector="network")
    reference = predictor(weights_dir, "torch", "corrective", corrector="network")
    assert engine.engine_name == name
    for pred in (engine, reference):
        out = pred.predict(SCENE, POINTS, positives=[[150, 120]], negatives=[])
        assert out.corrections == 1
    a = engine.predict(SCENE, POINTS, positives=[[150, 120]], negatives=[]).probabilities
    b = reference.predict(SCENE, POINTS, positives=[[150, 120]], negatives=[]).probabilities
    np.testing.assert_allclose(a, b, atol=1e-3)


def test_a_headed_version_stays_on_torch_with_one_line(weights_dir, caplog, fresh_warnings):
    first_runtime()
    add(weights_dir, "lite0h", "headed")
    with caplog.at_level(logging.INFO, logger="dextr_backend.build"):
        pred = predictor(weights_dir, "auto", "headed")
    assert pred.engine_name == "torch"
    assert sum("keep pass 1 in torch" in r.getMessage() for r in caplog.records) == 1
    assert not warnings_of(caplog)
