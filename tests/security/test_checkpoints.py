"""A run folder's files are data, never code: a planted pickle is refused without running, and a
truncated checkpoint is one clear line (delete the folder, or ``train --fresh``), not a traceback."""

from __future__ import annotations

import pytest
import torch
from test_training import make_shapes, small_config

from dextr_backend.cli import main
from dextr_backend.data.objects import folder_objects
from dextr_backend.data.splits import split
from dextr_backend.errors import InputError
from dextr_backend.training.trainer import Trainer


class Planted:
    """Unpickling this runs ``exec``: it writes ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('pwned')",)


@pytest.fixture()
def shapes(tmp_path):
    return make_shapes(tmp_path / "shapes")


def plant(run_dir, marker, name="checkpoint.pt"):
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.save({"model": Planted(marker), "optimizer": {}, "epoch": 3}, run_dir / name)


def test_the_planted_pickle_would_run_code_if_loaded_unsafely(tmp_path):
    """The payload is real: an unsafe load runs it (so the tests below show something)."""
    marker = tmp_path / "unsafe-marker"
    plant(tmp_path / "run", marker)
    torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert marker.read_text() == "pwned"


def test_resume_refuses_a_planted_checkpoint_without_running_it(shapes, tmp_path):
    marker = tmp_path / "marker"
    plant(tmp_path / "run", marker)
    with pytest.raises(InputError) as err:
        Trainer(small_config(), folder_objects(shapes), [], tmp_path / "run")
    message = str(err.value)
    assert "\n" not in message and "objects other than tensors" in message
    assert "train --fresh" in message and str(tmp_path / "run") in message
    assert not marker.exists()


def test_a_planted_best_weights_file_is_refused_too(shapes, tmp_path):
    marker = tmp_path / "marker"
    train, val = split(folder_objects(shapes))
    trainer = Trainer(small_config(), train, val, tmp_path / "run")
    plant(tmp_path / "run", marker, "best.pt")  # appears while the run goes on
    trainer.best = 1e9  # so no epoch rewrites best.pt before it is read
    with pytest.raises(InputError, match="best.pt"):
        trainer.run()
    assert not marker.exists()


def test_train_command_refuses_then_starts_fresh(shapes, tmp_path, weights_dir, capsys):
    marker = tmp_path / "marker"
    run_dir = tmp_path / "run"
    plant(run_dir, marker)
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
        "--run-dir",
        str(run_dir),
    ]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--fresh" in err and "Traceback" not in err
    assert main(args + ["--fresh"]) == 0
    assert not marker.exists()


@pytest.mark.slow
def test_a_truncated_checkpoint_is_one_line_then_fresh_starts_over(shapes, tmp_path, weights_dir, capsys):
    run_dir = tmp_path / "run"
    Trainer(small_config(epochs=1), folder_objects(shapes), [], run_dir).run()
    checkpoint = run_dir / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 3])
    with pytest.raises(InputError, match="truncated or corrupt") as err:
        Trainer(small_config(epochs=2), folder_objects(shapes), [], run_dir)
    assert "\n" not in str(err.value) and "train --fresh" in str(err.value)
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
        "--run-dir",
        str(run_dir),
    ]
    assert main(args) == 2
    assert "truncated or corrupt" in capsys.readouterr().err
    assert main(args + ["--fresh"]) == 0


def test_a_checkpoint_round_trips_as_plain_data(shapes, tmp_path):
    """Optimiser state, the moving average and numpy's RNG state all load with weights_only=True."""
    trainer = Trainer(small_config(ema_decay=0.9), folder_objects(shapes), [], tmp_path / "run")
    trainer.run()
    resumed = Trainer(small_config(ema_decay=0.9, epochs=2), folder_objects(shapes), [], tmp_path / "run")
    assert resumed.resumed_from_epoch == 1 and resumed.step == trainer.step
    assert resumed.rng.bit_generator.state == trainer.rng.bit_generator.state
    assert resumed.optimizer.state_dict()["state"].keys() == trainer.optimizer.state_dict()["state"].keys()
