"""The dependencies are declared truthfully (issue 29): the suite runs on the lowest release of rq
that setup.py allows, since the worker overrides rq internals and the reaper reads modules that
older releases lack."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]


def declared(name: str) -> Requirement:
    text = (REPO / "setup.py").read_text(encoding="utf-8")
    (spec,) = re.findall(rf'"({re.escape(name)}[<>=!~][^"]*)"', text)
    return Requirement(spec)


def test_rq_range_is_bounded_and_the_installed_rq_is_its_lowest():
    rq = declared("rq")
    lows = [Version(s.version) for s in rq.specifier if s.operator == ">="]
    assert lows and any(s.operator == "<" for s in rq.specifier), f"{rq}: give rq a floor and a ceiling"
    installed = Version(importlib.metadata.version("rq"))
    assert installed in rq.specifier, f"rq {installed} lies outside setup.py's {rq}"
    assert installed.release[:2] == lows[0].release[:2], (
        f"the suite runs on rq {installed}, but setup.py allows rq from {lows[0]}: run it there, or raise the floor"
    )


def test_rq_modules_the_reaper_reads_exist():
    import rq.executions  # noqa: F401
    import rq.job_lifecycle  # noqa: F401


@pytest.mark.parametrize("name", ["openvino", "onnx", "onnxruntime"])
def test_the_cpu_engines_are_declared_with_a_floor_the_suite_meets(name):
    """The CPU engines (issue 25): openvino and onnx are installed with the package, onnxruntime
    with the test tools; each has a floor, and the installed release meets it."""
    spec = declared(name)
    assert any(s.operator == ">=" for s in spec.specifier), f"{spec}: give {name} a floor"
    try:
        installed = Version(importlib.metadata.version(name))
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"{name} is not installed here")
    assert installed in spec.specifier, f"{name} {installed} lies outside setup.py's {spec}"
