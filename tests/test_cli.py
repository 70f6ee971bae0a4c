"""The command line: --help everywhere, one-line errors for bad input, real predictions."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dextr_backend.cli import build_parser, main
from dextr_backend.models import build_model


def _subcommands(parser):
    for action in parser._actions:
        if action.__class__.__name__ == "_SubParsersAction":
            for name, sub in action.choices.items():
                yield [name], sub
                for path, deeper in _subcommands(sub):
                    yield [name] + path, deeper


def test_every_command_has_help(capsys):
    paths = [p for p, _ in _subcommands(build_parser())]
    assert ["predict"] in paths and ["evaluate"] in paths and ["weights", "download"] in paths
    for path in [[]] + paths:
        with pytest.raises(SystemExit) as exc:
            main(path + ["--help"])
        assert exc.value.code == 0
        assert "usage:" in capsys.readouterr().out


SCRIPTS = sorted(
    str(p.relative_to(Path(__file__).parents[1]))
    for folder in ("benchmarks", "tools")
    for p in (Path(__file__).parents[1] / folder).glob("*.py")
)


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_has_help(script):
    out = subprocess.run(
        [sys.executable, script, "--help"], cwd=Path(__file__).parents[1], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage:")


def test_stride_ceiling_falls_as_the_grid_coarsens():
    spec = importlib.util.spec_from_file_location(
        "stride_ceiling", Path(__file__).parents[1] / "benchmarks" / "stride_ceiling.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from dextr_backend.data.benchmarks import EvalObject

    objects = []
    for i, r in enumerate((12, 20, 30)):  # a ring and two thin crosses: boundaries a coarse grid blurs
        mask = np.zeros((90, 110), np.uint8)
        if i == 0:
            cv2.circle(mask, (55, 45), r, 1, 3)
        else:
            cv2.line(mask, (55 - r, 45), (55 + r, 45), 1, 2)
            cv2.line(mask, (55, 45 - r), (55, 45 + r), 1, 2)
        objects.append(EvalObject(Path(f"obj{i}.png"), str(i), mask.astype(bool), np.zeros_like(mask, bool)))
    scores = [module.ceiling(objects, stride, 384) for stride in (1, 4, 16)]
    assert scores[0] > 95
    assert scores[0] > scores[1] > scores[2]


@pytest.fixture()
def image_file(tmp_path):
    img = np.zeros((100, 120, 3), np.uint8)
    cv2.circle(img, (60, 50), 30, (0, 0, 255), -1)
    path = tmp_path / "disk.png"
    cv2.imwrite(str(path), img)
    return path


@pytest.fixture()
def weights_file(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "random-lite0.pt"
    torch.save(build_model("lite0").state_dict(), path)
    return path


def _error(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("dextr-backend: error: "), err
    return err[0]


def test_predict_writes_mask_overlay_and_polygons(tmp_path, capsys, image_file, weights_file):
    out = tmp_path / "out"
    out.mkdir()
    code = main(
        [
            "predict",
            str(image_file),
            "--points",
            "30,50 90,50 60,20 60,80",
            "--weights",
            str(weights_file),
            "-o",
            str(out / "mask.png"),
            "--overlay",
            str(out / "overlay.png"),
            "--polygons",
            str(out / "poly.json"),
            "--threshold",
            "0.0",
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    mask = cv2.imread(str(out / "mask.png"), cv2.IMREAD_GRAYSCALE)
    assert mask.shape == (100, 120)
    # threshold 0 keeps exactly the points' box (everything outside it is zeroed by the pipeline)
    assert summary["area"] == int((mask > 0).sum()) == 61 * 61
    assert cv2.imread(str(out / "overlay.png")).shape == (100, 120, 3)
    assert isinstance(json.loads((out / "poly.json").read_text()), list)


@pytest.mark.parametrize(
    "points, message",
    [
        ("30,50 90,50 60,20", "at least 4"),
        ("30,50 90,50 60,20 500,80", "outside"),
        ("30;50 90,50", "x,y"),
        ("a,b c,d e,f g,h", "x,y"),
    ],
)
def test_predict_bad_points(capsys, image_file, weights_file, points, message):
    assert message in _error(capsys, ["predict", str(image_file), "--points", points, "--weights", str(weights_file)])


def test_predict_unreadable_image(tmp_path, capsys, weights_file):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    assert "not a readable image" in _error(
        capsys, ["predict", str(bad), "--points", "1,1 2,2 3,3 4,4", "--weights", str(weights_file)]
    )
    assert "no such file" in _error(capsys, ["predict", str(tmp_path / "missing.png"), "--points", "1,1 2,2 3,3 4,4"])


def test_predict_unknown_weights(capsys, image_file, weights_dir):
    msg = _error(
        capsys, ["predict", str(image_file), "--points", "30,50 90,50 60,20 60,80", "--weights", "no-such-version"]
    )
    assert "no-such-version" in msg


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--device", "banana"], "unknown device"),
        (["--device", "cuda"], "no CUDA GPU"),
        (["-o", "{tmp}/mask.txt"], "unknown extension"),
        (["-o", "{tmp}"], "is a folder"),
        (["-o", "{tmp}/missing/deeper/mask.png"], "does not exist"),
        (["--overlay", "{tmp}/overlay"], "unknown extension"),
        (["--polygons", "{tmp}/poly.png"], "unknown extension"),
        (["--threshold", "2"], "[0, 1)"),
        (["--threshold", "-0.5"], "[0, 1)"),
        (["--threads", "-1"], "threads"),
    ],
)
def test_predict_option_errors_are_one_line(tmp_path, capsys, image_file, weights_file, extra, message):
    if extra[0] == "--device" and extra[1] == "cuda":
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
    argv = ["predict", str(image_file), "--points", "30,50 90,50 60,20 60,80", "--weights", str(weights_file)]
    msg = _error(capsys, argv + [a.format(tmp=tmp_path) for a in extra])
    assert message in msg
    assert not (tmp_path / "missing").exists()  # a missing folder is refused, never created


@pytest.mark.parametrize(
    "content, message",
    [
        (b"hello world", "not a PyTorch file"),  # torch's own error here is a bare "101"
        (b"", "not a PyTorch file"),
    ],
)
def test_bad_weights_files_say_what_is_wrong(tmp_path, capsys, image_file, content, message):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(content)
    msg = _error(capsys, ["predict", str(image_file), "--points", "30,50 90,50 60,20 60,80", "--weights", str(bad)])
    assert message in msg and "weights_only" not in msg


def test_a_weights_file_holding_code_is_refused(tmp_path, capsys, image_file):
    import pickle

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    bad = tmp_path / "evil.pt"
    bad.write_bytes(pickle.dumps({"weight": Payload()}))
    msg = _error(capsys, ["predict", str(image_file), "--points", "30,50 90,50 60,20 60,80", "--weights", str(bad)])
    assert "could run code" in msg or "not a PyTorch file" in msg
    assert not marker.exists()
