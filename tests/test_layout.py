"""The package's layout rules (issue 21), checked on the source so that they stay true:

- imports go down only: each top-level part of ``dextr_backend`` has a rank, and a module
  imports only from its own part or from parts of a lower rank (so there are no cycles between
  parts either);
- ``settings.py`` is the only module that reads the environment;
- a module over 300 lines says why in its docstring.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "dextr_backend"

# Lowest first. The same rank means "neither imports the other".
RANKS = {
    "__init__": 0,
    "errors": 0,
    "redact": 0,
    "settings": 1,
    "logs": 1,
    "threads": 1,
    "geometry": 2,
    "imageio": 2,
    "postprocess": 2,
    "overlay": 2,
    "models": 2,
    "correctors": 3,
    "engines": 3,  # CPU runtimes for pass 1 and the ONNX export: the predictor runs them, build makes them
    "predictor": 4,
    "shipped_weights": 4,  # the shipped .pt files and their index: data, no code
    "weights": 5,
    "build": 6,
    "data": 7,
    "evaluation": 8,
    "training": 9,
    "service": 10,
    "training_runs": 10,  # a project's training runs: below the queue, whose reaper tells it of dead workers
    "queue": 11,
    "labelstudio": 12,
    "cvat": 12,
    "labelstudio_api": 13,
    "cli": 14,
    "__main__": 15,
}
MAX_LINES = 300


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        yield path, parts


def _is_module(dotted: list[str]) -> bool:
    path = PACKAGE.parent.joinpath(*dotted)
    return path.is_dir() or path.with_suffix(".py").exists()


def imported(source: str, parts: list[str]) -> set[str]:
    """Dotted names of the ``dextr_backend`` modules a module imports, relative imports resolved:
    ``from .. import cli`` is ``dextr_backend.cli``, not the package root."""
    package = parts[:-1]
    out = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                if node.module:
                    out.add(".".join(base + [node.module]))
                else:  # a module, or a name defined in the package itself (``__version__``)
                    out.update(
                        ".".join(base + [alias.name]) if _is_module(base + [alias.name]) else ".".join(base)
                        for alias in node.names
                    )
            elif node.module:
                out.add(node.module)
                if node.module == "dextr_backend":
                    out.update(
                        f"dextr_backend.{alias.name}"
                        for alias in node.names
                        if _is_module(["dextr_backend", alias.name])
                    )
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
    return {name for name in out if name == "dextr_backend" or name.startswith("dextr_backend.")}


def part_of(dotted: str) -> str:
    pieces = dotted.split(".")
    return pieces[1] if len(pieces) > 1 and pieces[1] != "__init__" else "__init__"


def test_every_part_has_a_rank():
    parts = {part_of(".".join(p)) for _, p in modules()}
    assert parts <= set(RANKS), f"give these a rank in RANKS: {sorted(parts - set(RANKS))}"


def upward_imports(source: str, parts: list[str]) -> list[str]:
    """The imports of one module (``parts``: its dotted path) that climb to its own rank or above."""
    own = part_of(".".join(parts))
    upward = []
    for name in imported(source, parts):
        other = part_of(name)
        if other != own and RANKS.get(other, 99) >= RANKS[own]:
            upward.append(f"{'/'.join(parts)}.py imports {name} ({own} {RANKS[own]} -> {other} {RANKS.get(other)})")
    return upward


def test_imports_go_down_only():
    upward = []
    for path, parts in modules():
        if parts == ["dextr_backend", "__init__"]:
            continue  # the package itself: its version, and OpenCV's decode limit set on import
        upward += upward_imports(path.read_text(encoding="utf-8"), parts)
    assert not upward, "\n".join(upward)


def test_the_layout_check_catches_planted_upward_imports():
    """A test of the test: each way of writing an upward import in ``models/lite.py`` is caught
    (``from .. import cli`` once read as the harmless package root), and a downward one is not."""
    lite = ["dextr_backend", "models", "lite"]
    source = (PACKAGE / "models" / "lite.py").read_text(encoding="utf-8")
    assert upward_imports(source, lite) == []
    for planted in (
        "from .. import cli",
        "from ..cli import main",
        "from ..labelstudio_api.app import create_app",
        "import dextr_backend.queue.worker",
        "from dextr_backend import service",
        "from . import lite\nfrom .. import predictor",
    ):
        assert upward_imports(source + "\n" + planted + "\n", lite), planted
    assert upward_imports(source + "\nfrom .. import errors, __version__\n", lite) == []


def test_only_settings_reads_the_environment():
    readers = []
    for path, parts in modules():
        if parts[-1] == "settings":
            continue
        text = path.read_text(encoding="utf-8")
        for needle in ("os.environ", "os.getenv", "getenv("):
            if needle in text:
                readers.append(f"{'/'.join(parts)}.py: {needle}")
    assert not readers, "read these through Settings instead:\n" + "\n".join(readers)


def test_long_modules_say_why():
    unexplained = []
    for path, parts in modules():
        text = path.read_text(encoding="utf-8")
        lines = text.count("\n")
        doc = ast.get_docstring(ast.parse(text)) or ""
        if lines > MAX_LINES and f"over {MAX_LINES} lines" not in doc:
            unexplained.append(f"{'/'.join(parts)}.py: {lines} lines")
    assert not unexplained, (
        f"split these, or say in the docstring why one module is right "
        f"(with the words 'over {MAX_LINES} lines'):\n" + "\n".join(unexplained)
    )


MAX_FUNCTION_LINES = 60


def test_long_functions_say_why():
    """No function passes 60 lines without its docstring saying why (with the words 'over 60 lines')."""
    unexplained = []
    for path, parts in modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES and f"over {MAX_FUNCTION_LINES} lines" not in (
                    ast.get_docstring(node) or ""
                ):
                    unexplained.append(f"{'/'.join(parts)}.py: {node.name} ({lines} lines)")
    assert not unexplained, "split these, or say why in their docstrings:\n" + "\n".join(unexplained)
