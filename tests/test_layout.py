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
    "__init__": 0, "errors": 0, "redact": 0,
    "settings": 1, "logs": 1, "threads": 1,
    "geometry": 2, "imageio": 2, "postprocess": 2, "overlay": 2, "models": 2,
    "correctors": 3,
    "predictor": 4,
    "shipped_weights": 4,            # the shipped .pt files and their index: data, no code
    "weights": 5,
    "build": 6,
    "data": 7,
    "evaluation": 8,
    "training": 9,
    "service": 10,
    "queue": 11,
    "labelstudio": 12, "cvat": 12,
    "server": 13,
    "cli": 14,
    "__main__": 15,
}
MAX_LINES = 300


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        yield path, parts


def imported(path: Path, parts: list[str]) -> set[str]:
    """Dotted names of the ``dextr_backend`` modules ``path`` imports, relative imports resolved."""
    package = parts[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                out.add(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
    return {name for name in out if name == "dextr_backend" or name.startswith("dextr_backend.")}


def part_of(dotted: str) -> str:
    pieces = dotted.split(".")
    return pieces[1] if len(pieces) > 1 and pieces[1] != "__init__" else "__init__"


def test_every_part_has_a_rank():
    parts = {part_of(".".join(p)) for _, p in modules()}
    assert parts <= set(RANKS), f"give these a rank in RANKS: {sorted(parts - set(RANKS))}"


def test_imports_go_down_only():
    upward = []
    for path, parts in modules():
        own = part_of(".".join(parts))
        if parts == ["dextr_backend", "__init__"]:
            continue        # the package itself: its version, and OpenCV's decode limit set on import
        for name in imported(path, parts):
            other = part_of(name)
            if other != own and RANKS[other] >= RANKS[own]:
                upward.append(f"{'/'.join(parts)}.py imports {name} ({own} {RANKS[own]} -> {other} {RANKS[other]})")
    assert not upward, "\n".join(upward)


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
    assert not unexplained, (f"split these, or say in the docstring why one module is right "
                             f"(with the words 'over {MAX_LINES} lines'):\n" + "\n".join(unexplained))
