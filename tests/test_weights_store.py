"""The weights store on real files: versions, current, loading with checksums, shipped defaults, CLI."""

from __future__ import annotations

import hashlib
import json
import threading

import pytest
import torch

from dextr_backend.build import build_predictor
from dextr_backend.cli import main
from dextr_backend.errors import WeightsError
from dextr_backend.models import build_model, get_architecture
from dextr_backend.weights import KNOWN_WEIGHTS, WeightsStore, default_threshold


@pytest.fixture(scope="module")
def lite_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return build_model("lite0").state_dict()


@pytest.fixture()
def store(weights_dir, tmp_path) -> WeightsStore:
    """A user store with an empty shipped folder, so a later shipped default cannot change results."""
    (tmp_path / "shipped").mkdir()
    return WeightsStore(weights_dir, shipped_dir=tmp_path / "shipped")


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_add_use_current_load_round_trip(store, lite_state):
    with pytest.raises(WeightsError, match="weights download dextr_pascal-sbd"):
        store.current()
    v1 = store.add_version(lite_state, "lite0", metrics={"iou": 0.91}, card={"data": "train split"})
    assert v1.name == "v1" and v1.arch == "lite0" and v1.source == "training"
    assert v1.input_size == get_architecture("lite0").input_size
    assert v1.threshold == default_threshold("lite0") == 0.5
    assert v1.sha256 == hashlib.sha256(v1.path.read_bytes()).hexdigest()
    assert v1.size == v1.path.stat().st_size and v1.created.endswith("Z")

    v2 = store.add_version(lite_state, "lite0", parent="v1", threshold=0.6, input_size=384, make_current=True)
    assert v2.input_size == 384 and v2.threshold == 0.6
    assert [v.name for v in store.versions()] == ["v1", "v2"]
    assert store.current().name == "v2" and store.get("v2").parent == "v1"

    assert store.use("v1").name == "v1"
    assert store.current().name == "v1"
    loaded = store.load()
    assert (loaded.version, loaded.arch, loaded.threshold) == ("v1", "lite0", 0.5)
    assert loaded.meta.metrics == {"iou": 0.91} and loaded.meta.card == {"data": "train split"}
    assert_same_state(loaded.state_dict, lite_state)
    assert store.load("v2").threshold == 0.6

    manifest = json.loads((store.root / "manifest.json").read_text())
    assert manifest["current"] == "v1"
    assert set(manifest["versions"][1]) == {
        "name",
        "arch",
        "input_size",
        "threshold",
        "trim",
        "file",
        "sha256",
        "size",
        "metrics",
        "parent",
        "created",
        "source",
        "card",
        "base",
        "corrector",
    }
    # Nothing but the manifest, its lock and the two weight files: no temp files left behind.
    assert sorted(p.name for p in store.root.iterdir()) == [".manifest.lock", "manifest.json", "v1.pt", "v2.pt"]


def test_a_network_trained_channels_last_is_saved_in_the_default_layout(store, lite_state):
    """Training runs channels-last; the version file holds the same numbers in the default layout."""
    model = build_model("lite0")
    model.load_state_dict(lite_state)
    state = model.to(memory_format=torch.channels_last).state_dict()
    assert not all(v.is_contiguous() for v in state.values())
    loaded = store.load(store.add_version(state, "lite0").name)
    assert all(v.is_contiguous() for v in loaded.state_dict.values())
    assert_same_state(loaded.state_dict, lite_state)


def test_auto_names_never_collide(store, lite_state):
    assert store.add_version(lite_state, "lite0").name == "v1"
    assert store.add_version(lite_state, "lite0", name="v7").name == "v7"
    assert store.add_version(lite_state, "lite0").name == "v8"
    assert store.add_version(lite_state, "lite0", name="finetuned-cats").name == "finetuned-cats"
    with pytest.raises(WeightsError, match="already exists"):
        store.add_version(lite_state, "lite0", name="v7")
    with pytest.raises(WeightsError, match="invalid version name"):
        store.add_version(lite_state, "lite0", name="../escape")
    with pytest.raises(WeightsError, match="unknown architecture"):
        store.add_version(lite_state, "nonet")
    assert len(store.versions()) == 4
    assert not list(store.root.glob(".*.tmp"))


def test_concurrent_writers_keep_every_version(store, lite_state):
    """Separate store objects (like a training worker and the API) share the manifest safely."""
    errors = []

    def add():
        try:
            WeightsStore(store.root, shipped_dir=store.shipped_dir).add_version(lite_state, "lite0")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=add) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(v.name for v in store.versions()) == ["v1", "v2", "v3"]


def test_load_by_path(store, lite_state, tmp_path):
    plain, wrapped = tmp_path / "plain.pth", tmp_path / "wrapped.pt"
    torch.save(lite_state, plain)
    torch.save({"state_dict": lite_state, "epoch": 3}, wrapped)
    for path in (plain, wrapped):
        loaded = store.load(str(path))
        assert loaded.arch == "lite0" and loaded.version == path.name
        assert loaded.input_size == get_architecture("lite0").input_size
        assert loaded.threshold == default_threshold("lite0")
        assert_same_state(loaded.state_dict, lite_state)
    with pytest.raises(WeightsError, match="no weights file"):
        store.load(str(tmp_path / "missing.pth"))
    with pytest.raises(WeightsError, match="unknown weights version 'nope'"):
        store.load("nope")


def test_truncated_or_altered_file_is_refused(store, lite_state):
    v = store.add_version(lite_state, "lite0", make_current=True)
    data = v.path.read_bytes()
    v.path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError) as err:
        store.load()
    message = str(err.value)
    assert str(v.path) in message and "truncated" in message and "not loaded" in message

    flipped = bytearray(data)
    flipped[len(flipped) // 2] ^= 0xFF
    v.path.write_bytes(bytes(flipped))
    with pytest.raises(WeightsError, match="is corrupt .*not loaded"):
        store.load("v1")

    v.path.unlink()
    with pytest.raises(WeightsError, match="missing"):
        store.load("v1")
    with pytest.raises(WeightsError, match="missing"):
        store.use("v1")


def test_shipped_default_is_current_until_the_user_chooses(weights_dir, tmp_path, lite_state):
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    torch.save(lite_state, shipped / "lite0-base.pt")
    data = (shipped / "lite0-base.pt").read_bytes()
    record = {
        "name": "lite0-base",
        "arch": "lite0",
        "input_size": get_architecture("lite0").input_size,
        "threshold": 0.55,
        "file": "lite0-base.pt",
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "metrics": {"grabcut_iou": 90.0},
        "parent": None,
        "created": "2025-01-01T00:00:00Z",
        "source": "shipped",
        "card": {"data": "COCO"},
    }
    (shipped / "index.json").write_text(json.dumps({"default": "lite0-base", "versions": [record]}))
    store = WeightsStore(weights_dir, shipped_dir=shipped)

    current = store.current()
    assert current.name == "lite0-base" and current.shipped and current.threshold == 0.55
    assert_same_state(store.load().state_dict, lite_state)

    with pytest.raises(WeightsError, match="already exists"):
        store.add_version(lite_state, "lite0", name="lite0-base")
    store.add_version(lite_state, "lite0", parent="lite0-base", make_current=True)
    assert store.current().name == "v1"
    assert [v.name for v in store.versions()] == ["lite0-base", "v1"]
    store.use("lite0-base")
    assert store.current().name == "lite0-base"

    predictor = build_predictor(store=store, device="cpu")
    assert predictor.version == "lite0-base" and predictor.threshold == 0.55
    assert predictor.postprocess.trim == 0  # a record written before trims existed


def test_a_version_carries_its_boundary_trim_to_the_predictor(store, lite_state):
    store.add_version(lite_state, "lite0", name="plain", make_current=True)
    store.add_version(lite_state, "lite0", name="trimmed", threshold=0.65, trim=1)
    assert store.get("plain").trim == 0 and store.get("trimmed").trim == 1
    assert build_predictor("plain", store=store, device="cpu").postprocess.trim == 0
    predictor = build_predictor("trimmed", store=store, device="cpu")
    assert predictor.postprocess.trim == 1 and predictor.threshold == 0.65
    with pytest.raises(WeightsError, match="trim"):
        store.add_version(lite_state, "lite0", name="bad", trim=-2)


@pytest.mark.parametrize("trim", [-1, 1.5, "one"])
def test_a_malformed_trim_in_a_record_is_a_clear_error(weights_dir, tmp_path, lite_state, trim):
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    torch.save(lite_state, shipped / "w.pt")
    record = {"name": "w", "arch": "lite0", "input_size": 64, "threshold": 0.5, "trim": trim, "file": "w.pt"}
    (shipped / "index.json").write_text(json.dumps({"default": "w", "versions": [record]}))
    with pytest.raises(WeightsError, match="malformed version record"):
        WeightsStore(weights_dir, shipped_dir=shipped).current()


def test_import_validates_against_the_architecture(store, lite_state, tmp_path):
    junk = tmp_path / "junk.pth"
    torch.save({"weight": torch.zeros(3)}, junk)
    with pytest.raises(WeightsError, match="match no known architecture"):
        store.import_file(junk)
    with pytest.raises(WeightsError, match="do not fit"):
        store.import_file(junk, arch="lite0")
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read weights file"):
        store.import_file(text)
    assert store.versions() == []
    assert not store.root.exists() or not [p for p in store.root.iterdir() if p.name != ".manifest.lock"]

    good = tmp_path / "my-model.pth"
    torch.save({"state_dict": lite_state}, good)
    v = store.import_file(good, make_current=True)
    assert (v.name, v.arch, v.source) == ("my-model", "lite0", str(good.resolve()))
    assert v.path.read_bytes() == good.read_bytes()
    assert store.current().name == "my-model"
    assert_same_state(store.load().state_dict, lite_state)
    with pytest.raises(WeightsError, match="--name"):
        store.import_file(good)
    assert store.import_file(good, name="copy").name == "copy"
    sized = store.import_file(good, name="sized", input_size=384, threshold=0.85, trim=1)
    assert (sized.input_size, sized.threshold, sized.trim) == (384, 0.85, 1)
    with pytest.raises(WeightsError, match="trim"):
        store.import_file(good, name="bad-trim", trim=-1)
    assert store.load("sized").input_size == 384
    with pytest.raises(WeightsError, match="threshold"):
        store.import_file(good, name="bad", threshold=1.5)
    assert not list(store.root.glob("*.tmp"))  # nothing staged for a refused import


# ---------------------------------------------------------------------------- CLI


def test_cli_import_use_list_show(weights_dir, tmp_path, lite_state, capsys):
    path = tmp_path / "cats.pth"
    torch.save(lite_state, path)
    assert main(["weights", "import", str(path), "--name", "cats", "--use"]) == 0
    assert main(["weights", "import", str(path), "--name", "dogs", "--threshold", "0.6", "--trim", "2"]) == 0
    assert "imported cats" in capsys.readouterr().out

    assert main(["weights", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:5] == ["NAME", "ARCH", "CLICKS", "SIZE", "MASK"]
    assert any(" cats " in line and " lite0 " in line and " 4 " in line for line in lines)  # no corrections
    assert any(line.startswith("*") and " cats " in line for line in lines)
    assert any(" dogs " in line and " t=0.6 trim 2 " in line and not line.startswith("*") for line in lines)
    assert any("dextr_pascal-sbd" in line and "not downloaded" in line for line in lines)

    assert main(["weights", "use", "dogs"]) == 0
    assert "current weights: dogs" in capsys.readouterr().out
    assert main(["weights", "list", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["current"] == "dogs"
    assert {v["name"] for v in listing["versions"]} >= {"cats", "dogs"}
    assert {k["name"] for k in listing["available"]} == set(KNOWN_WEIGHTS)

    assert main(["weights", "show", "cats"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["arch"] == "lite0" and shown["card"]["imported_from"] == str(path.resolve())
    assert main(["weights", "show", "dextr_pascal-sbd"]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"]["pascal_voc12_val_iou"] == 91.5


def test_cli_unknown_names_fail_in_one_line(weights_dir, capsys):
    assert main(["weights", "use", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nope" in err and "dextr_pascal-sbd" in err
    assert main(["weights", "download", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "dextr_coco" in err


@pytest.mark.parametrize("action", [[], ["list"], ["download"], ["import"], ["use"], ["show"]])
def test_cli_every_subcommand_has_help(action, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["weights", *action, "--help"])
    assert exit_.value.code == 0
    assert "usage: dextr-backend weights" in capsys.readouterr().out


def test_every_shipped_version_matches_its_checksum_and_the_default_is_one_of_them(weights_dir):
    """What the repository ships in weights/: each record's file is there and unaltered; a record
    may reuse another's file (same network, other inference settings)."""
    from pathlib import Path

    shipped = Path(__file__).resolve().parents[1] / "weights"
    index = json.loads((shipped / "index.json").read_text())
    store = WeightsStore(weights_dir, shipped_dir=shipped)
    names = [v["name"] for v in index["versions"]]
    assert index["default"] in names and store.current().name == index["default"]
    for name in names:
        meta = store.get(name)
        assert meta.shipped and 0.0 < meta.threshold < 1.0
        store.verify(meta)  # raises on a missing, truncated or altered file
        assert (shipped / meta.card["file"]).is_file()  # every shipped version has its model card
    files = {v["file"] for v in index["versions"]}
    assert sum((shipped / f).stat().st_size for f in files) <= 25 * 10**6  # what an install carries


def test_the_stamp_changes_with_every_write_and_reads_are_cached(store, lite_state, monkeypatch):
    """A resident predictor polls ``stamp()`` per request; the JSON is parsed again only after a write."""
    before = store.stamp()
    store.add_version(lite_state, "lite0", name="a", make_current=True)
    after_add = store.stamp()
    assert after_add != before
    reads = []
    real = type(store)._read_json
    monkeypatch.setattr(type(store), "_read_json", lambda self, *a: reads.append(a[0]) or real(self, *a))
    for _ in range(3):
        assert store.current().name == "a" and store.current_name() == "a"
        store.check()
    assert reads == []  # nothing changed: no JSON read at all
    other = WeightsStore(store.root, shipped_dir=store.shipped_dir)  # another process, say
    other.add_version(lite_state, "lite0", name="b")
    other.use("b")
    assert store.stamp() != after_add and store.current().name == "b"
    assert reads  # re-read once the stamp moved


def test_a_grown_version_ships_only_its_head_over_its_parents_file(weights_dir, tmp_path, lite_state):
    """lite0h's frozen parent is not stored twice: its file holds the head, ``base`` names the parent's."""
    from dextr_backend.models import grow_state

    shipped = tmp_path / "shipped"
    shipped.mkdir()
    torch.save(lite_state, shipped / "lite0-base.pt")
    parent = (shipped / "lite0-base.pt").read_bytes()
    grown = grow_state("lite0h", lite_state)
    head = {k: v for k, v in grown.items() if k.startswith("head.")}
    head["head.out.bias"] = torch.full_like(head["head.out.bias"], 0.25)  # a "trained" head
    torch.save(head, shipped / "lite0h-head.pt")
    own = (shipped / "lite0h-head.pt").read_bytes()
    base = {"file": "lite0-base.pt", "sha256": hashlib.sha256(parent).hexdigest(), "size": len(parent)}
    records = [
        {
            "name": "lite0-base",
            "arch": "lite0",
            "input_size": 384,
            "threshold": 0.5,
            "file": "lite0-base.pt",
            "sha256": base["sha256"],
            "size": len(parent),
        },
        {
            "name": "lite0h-1",
            "arch": "lite0h",
            "input_size": 384,
            "threshold": 0.5,
            "file": "lite0h-head.pt",
            "sha256": hashlib.sha256(own).hexdigest(),
            "size": len(own),
            "base": base,
            "corrector": "network+consistent",
        },
    ]
    (shipped / "index.json").write_text(json.dumps({"default": "lite0h-1", "versions": records}))
    store = WeightsStore(weights_dir, shipped_dir=shipped)

    assert len(own) < len(parent) / 20, "the head file must not hold the parent"
    loaded = store.load()
    assert loaded.arch == "lite0h"
    assert_same_state(loaded.state_dict, {**grown, "head.out.bias": head["head.out.bias"]})
    predictor = build_predictor(store=store, device="cpu")
    assert predictor.corrector_name == "network+consistent" and store.current().takes_corrections

    # A tampered parent file is refused by the grown version too, before anything is unpickled.
    (shipped / "lite0-base.pt").write_bytes(parent[:-10] + b"0123456789")
    with pytest.raises(WeightsError, match="lite0-base.pt of version 'lite0h-1' is corrupt"):
        store.load("lite0h-1")


def test_a_retrained_version_serves_corrections_as_its_parent_does(store, lite_state):
    parent = store.add_version(lite_state, "lite0", name="fixing", corrector="graphcut+consistent")
    child = store.add_version(lite_state, "lite0", parent=parent.name, make_current=True)
    assert child.corrector == "graphcut+consistent" and child.takes_corrections
    assert build_predictor(store=store, device="cpu").corrector_name == "graphcut+consistent"
    plain = store.add_version(lite_state, "lite0", name="plain")
    assert plain.corrector is None and not plain.takes_corrections


def test_weights_list_marks_the_default_as_taking_corrections(weights_dir, capsys):
    """The shipped default serves corrective clicks through its corrector, so it is ``4+fix``."""
    assert main(["weights", "list"]) == 0
    current = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("*"))
    assert current.split()[1:4] == [WeightsStore(weights_dir).current_name(), "lite0", "4+fix"]
