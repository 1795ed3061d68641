"""The import rules of docs/ARCHITECTURE.md, read from the source of every module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "cnnfilters"

CORE = {"engine", "kernels", "ops", "activations", "rounding", "backprop", "learn"}
# module: (cnnfilters modules it may import, third-party packages it must not import)
RULES = {
    **{name: (CORE | {"errors", "defaults", "report"}, {"PIL", "typer", "rich"}) for name in CORE},
    "reference": (set(), {"typer", "rich"}),
    "report": ({"errors", "_version"}, {"PIL", "typer", "rich"}),
    "defaults": (set(), {"numpy", "PIL", "typer", "rich"}),
    "errors": (set(), {"numpy", "PIL", "typer", "rich"}),
    "integrity": (set(), {"typer", "rich"}),
    "images": (
        {"_libtiff", "frames", "integrity", "loaded", "pngrows", "tiff", "defaults", "errors"},
        {"typer", "rich"},
    ),
    "loaded": ({"levels", "pngrows", "rounding", "defaults", "errors"}, {"typer", "rich"}),
    "frames": ({"integrity", "levels", "loaded", "pngrows", "errors"}, {"typer", "rich"}),
    "tiff": ({"_libtiff", "frames", "levels", "loaded", "errors"}, {"typer", "rich"}),
    "levels": (set(), {"PIL", "typer", "rich"}),
    "pngrows": ({"integrity", "errors"}, {"typer", "rich"}),
    "inputs": ({"errors", "defaults"}, {"typer", "rich"}),
    "commands": (
        CORE | {"reference", "report", "images", "levels", "loaded", "defaults", "errors"},
        {"typer", "rich"},
    ),
    "outputs": (
        {
            "atomic",
            "clobber",
            "formats",
            "images",
            "levels",
            "loaded",
            "defaults",
            "errors",
            "report",
        },
        {"typer", "rich"},
    ),
    "atomic": ({"errors", "report"}, {"numpy", "PIL", "typer", "rich"}),
    "formats": ({"errors"}, {"typer", "rich"}),
    "clobber": ({"errors"}, {"numpy", "PIL", "typer", "rich"}),
    "runfiles": ({"clobber", "inputs", "errors"}, {"PIL", "typer", "rich"}),
    "run": (
        {
            "atomic",
            "clobber",
            "commands",
            "formats",
            "images",
            "inputs",
            "inflight",
            "outputs",
            "report",
            "startup",
            "errors",
        },
        {"typer", "rich"},
    ),
    "inflight": ({"inputs", "outputs", "report", "errors"}, {"PIL", "typer", "rich"}),
    "learning": (
        {"atomic", "clobber", "commands", "images", "kernels", "outputs", "report", "errors"},
        {"typer", "rich"},
    ),
    "startup": (set(), {"numpy", "PIL", "rich"}),
    "session": (
        {
            "atomic",
            "backprop",
            "commands",
            "html",
            "images",
            "inputs",
            "learning",
            "outputs",
            "render",
            "report",
            "run",
            "runfiles",
            "formats",
            "table",
            "defaults",
            "errors",
            "_version",
        },
        {"typer", "rich"},
    ),
    "table": ({"render"}, {"numpy", "PIL", "typer"}),
    "cli": (
        {
            "activations",
            "atomic",
            "commands",
            "demo",
            "kernels",
            "outputs",
            "render",
            "runfiles",
            "session",
            "startup",
            "defaults",
            "errors",
            "_version",
        },
        {"numpy", "PIL", "rich"},
    ),
}


def imports(path: Path, *, top_level_only: bool = False) -> tuple[set[str], set[str]]:
    """(cnnfilters modules, third-party packages) that ``path`` imports at run time.

    Imports under ``if TYPE_CHECKING:`` are for type checkers only and left out.
    """
    tree = ast.parse(path.read_text())
    ours: set[str] = set()
    theirs: set[str] = set()

    def visit(node: ast.AST, depth: int) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return
        if isinstance(node, ast.ImportFrom) and node.level:
            if node.module:
                ours.add(node.module.split(".")[0])
            else:
                ours.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            theirs.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            theirs.update(alias.name.split(".")[0] for alias in node.names)
        nested = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        if top_level_only and nested:
            return
        for child in ast.iter_child_nodes(node):
            visit(child, depth + 1)

    visit(tree, 0)
    return ours, theirs


def _files(module: str) -> list[Path]:
    """A module's file, or every file of a package."""
    folder = PACKAGE / module
    return sorted(folder.glob("*.py")) if folder.is_dir() else [PACKAGE / f"{module}.py"]


def _ours(path: Path, module: str, *, top_level_only: bool = False) -> set[str]:
    """The package's modules that ``path`` imports (at its top level only, if asked):
    within a package of its own, ``from .x`` is its own room, ``from ..x`` another."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in tree.body if top_level_only else ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            inside = path.parent != PACKAGE and node.level == 1
            top = module if inside else (node.module or "").split(".")[0]
            names = [a.name for a in node.names] if not node.module and not inside else [top]
            found.update(names)
    return found


@pytest.mark.parametrize("module", sorted(RULES))
def test_each_room_imports_only_what_it_may(module):
    allowed, forbidden = RULES[module]
    for path in _files(module):
        ours, theirs = imports(path)
        if path.parent != PACKAGE:
            ours = _ours(path, module)
        assert ours - {module} <= allowed, f"{path} imports {sorted(ours - allowed - {module})}"
        assert not theirs & forbidden, f"{path} imports {sorted(theirs & forbidden)}"


def test_the_command_line_loads_numpy_and_pillow_only_inside_commands():
    light = {"render", "startup", "_version", "defaults", "errors", "session"}
    for path in [*(PACKAGE / "cli").glob("*.py"), PACKAGE / "session.py"]:
        ours, theirs = imports(path, top_level_only=True)
        assert not theirs & {"numpy", "PIL", "rich"}, path.name
        if path.parent.name == "cli":
            ours = _ours(path, "cli", top_level_only=True)
        assert ours <= light | {"cli"}, f"{path.name} imports {sorted(ours - light)}"
    _, rendering = imports(PACKAGE / "render.py", top_level_only=True)
    assert not rendering & {"numpy", "PIL", "rich"}


def test_every_module_is_in_a_room():
    documented = (PACKAGE.parent / "docs" / "ARCHITECTURE.md").read_text()
    for path in [*PACKAGE.glob("*.py"), *PACKAGE.glob("*/__init__.py")]:
        name = path.parent.name if path.name == "__init__.py" else path.stem
        if name not in ("cnnfilters", "__main__", "_version"):
            assert f"`{name}`" in documented, f"{name} is not in docs/ARCHITECTURE.md"


# Lines a module may hold: a room that fills up is split by purpose, the new
# work beside it (docs/ARCHITECTURE.md). The engine is one coherent thing,
# kept whole; each module of the command line and each command's file is small.
LINE_LIMITS = {"engine": 980}
CLI_LIMIT = 550
COMMAND_FILE_LIMIT = 250
MODULE_LIMIT = 750


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: p.stem)
def test_no_room_fills_up_again(path):
    lines = len(path.read_text().splitlines())
    if path.parent.name == "commands":
        limit = COMMAND_FILE_LIMIT
    elif path.parent.name == "cli":
        limit = CLI_LIMIT
    else:
        limit = LINE_LIMITS.get(path.stem, MODULE_LIMIT)
    assert lines <= limit, f"{path.name}: {lines} lines, at most {limit}"


def test_only_a_library_caller_spreads_the_engine_over_threads():
    """The command line has its own parallelism (a pipeline of threads, a batch one
    process a core): no module of the package sets the engine's threads."""
    for path in PACKAGE.glob("*.py"):
        calls = [ast.unparse(node.func) for node in ast.walk(ast.parse(path.read_text()))
                 if isinstance(node, ast.Call)]  # fmt: skip
        assert not any("set_num_threads" in call for call in calls), path.stem
