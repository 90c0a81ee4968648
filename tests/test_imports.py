"""The package's imports flow one way: no circle among its modules, counting imports inside functions and
the lazy ``"aeroseg.x"`` names that ``importlib`` resolves (a registry entry, a lazy export)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "aeroseg"


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _owner(name: str, modules: dict[str, Path]) -> str | None:
    """The module ``name`` is, or the deepest package or module that holds it (``a.b.func`` → ``a.b``)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _packages(name: str) -> set[str]:
    """The packages that hold module ``name`` (``a.b.c`` → ``a``, ``a.b``)."""
    return {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}


def import_graph() -> dict[str, set[str]]:
    """Module → the package modules it imports (at the top, inside functions, or by a dotted name string
        that ``importlib`` resolves), and the packages of what it imports from outside its own package (importing
    ``a.b.c`` from elsewhere runs ``a/b/__init__`` first).
        ``if TYPE_CHECKING:`` blocks do not count (they never run), nor the names of a package ``__init__``'s
        lazy exports (imported on attribute access, after the package is initialised)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str | None] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
                node.body = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets |= {_owner(a.name, modules) for a in node.names if a.name.startswith("aeroseg")}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parts, base] if base else parts)
                if base.startswith("aeroseg"):
                    targets |= {_owner(f"{base}.{a.name}", modules) for a in node.names}
            elif (
                isinstance(node, ast.Constant) and isinstance(node.value, str) and path.name != "__init__.py"
            ):
                text = node.value.partition(":")[0]  # "module:attribute" registry entries
                if text.startswith("aeroseg.") and text in modules:
                    targets.add(text)
        own = _packages(name)  # being initialised already when this module runs
        inits = {p for t in targets if t is not None for p in _packages(t) - own}
        graph[name] = {t for t in targets | inits if t is not None and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_circle():
    found = cycles(import_graph())
    assert not found, "import circles: " + "; ".join(" <-> ".join(c) for c in found)


def test_the_cycle_check_sees_imports_inside_functions(tmp_path, monkeypatch):
    (tmp_path / "aeroseg").mkdir()
    (tmp_path / "aeroseg" / "__init__.py").write_text("")
    (tmp_path / "aeroseg" / "a.py").write_text("from aeroseg import b\n")
    (tmp_path / "aeroseg" / "b.py").write_text("def f():\n    from aeroseg.a import g\n")
    (tmp_path / "aeroseg" / "c.py").write_text("ENTRY = 'aeroseg.d:Thing'\n")
    (tmp_path / "aeroseg" / "d.py").write_text("from aeroseg import c\n")
    (tmp_path / "aeroseg" / "p").mkdir()  # a package whose __init__ imports what imports back into it
    (tmp_path / "aeroseg" / "p" / "__init__.py").write_text("from aeroseg.p.api import run\n")
    (tmp_path / "aeroseg" / "p" / "api.py").write_text("from aeroseg.e import x\n")
    (tmp_path / "aeroseg" / "p" / "low.py").write_text("")
    (tmp_path / "aeroseg" / "e.py").write_text("from aeroseg.p.low import y\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path / "aeroseg")
    assert sorted(cycles(import_graph())) == [
        ["aeroseg.a", "aeroseg.b"],
        ["aeroseg.c", "aeroseg.d"],
        ["aeroseg.e", "aeroseg.p", "aeroseg.p.api"],
    ]


def test_model_families_do_not_import_front_ends():
    """Models never reach up into the code that runs them (predict, serve, evaluation, the registry, the CLI)."""
    front = ("aeroseg.cli", "aeroseg.prediction", "aeroseg.serve", "aeroseg.evaluation", "aeroseg.registry",
             "aeroseg.distributed", "aeroseg.training")  # fmt: skip
    graph = import_graph()
    for name, targets in graph.items():
        if name.startswith(
            ("aeroseg.modeling", "aeroseg.training_free", "aeroseg.encoders", "aeroseg.convert")
        ):
            upward = sorted(t for t in targets if any(t == f or t.startswith(f + ".") for f in front))
            assert not upward, f"{name} imports {upward}"


@pytest.mark.parametrize("command", [["--help"], ["presets"], ["--version"]])
def test_the_command_line_starts_without_torch(command):
    code = (
        "import sys\nfrom aeroseg.cli import main\n"
        f"try:\n    main({command!r})\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
