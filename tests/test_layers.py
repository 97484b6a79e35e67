"""The package's layers (README, "Layout"): every import of a multibox module goes to the same or an earlier layer."""

from __future__ import annotations

import ast
from pathlib import Path

import multibox

ORDER = [
    ("errors", "outputs", "devices", "dataset_formats"),
    ("config",),
    ("data",),
    ("boxes",),
    ("models",),
    ("losses",),
    ("metrics",),
    ("reporting",),
    ("engine",),
    ("inference",),
    ("demo", "commands"),
    ("cli", "__init__", "__main__"),
]
RANK = {name: rank for rank, names in enumerate(ORDER) for name in names}
ALLOWED = {("multibox/config.py", "multibox.data.transforms")}  # README, "Layout": data.augment checked at load


def _layer(module: str) -> str:
    return module.split(".")[1]


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every absolute multibox import in `path`, function-level and TYPE_CHECKING ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
            if (
                node.module == "multibox"
            ):  # `from multibox import data` is the data layer, `import __version__` the root
                names = [f"multibox.{a.name}" if a.name in RANK else "multibox.__init__" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found += [(node.lineno, n) for n in names if n.startswith("multibox.")]
    return found


def test_no_import_runs_back_up_the_layers() -> None:
    root = Path(multibox.__file__).parent
    upward, unknown = [], set()
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root.parent).as_posix()
        mine = _layer(".".join(path.relative_to(root.parent).with_suffix("").parts) + ".x")
        for line, module in _imports(path):
            theirs = _layer(module)
            unknown |= {name for name in (mine, theirs) if name not in RANK}
            if RANK.get(theirs, -1) > RANK.get(mine, -1) and (relative, module) not in ALLOWED:
                upward.append(f"{relative}:{line}: {mine} -> {module}")
    assert not unknown, f"modules missing from ORDER (and the README's Layout): {sorted(unknown)}"
    assert not upward, "\n".join(upward)
