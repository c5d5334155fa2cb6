"""The shape of the code, read with `ast` (nothing is imported): no import circles in the core or
the add-on, no `_private` name imported from another module, no product module over 400 lines,
imports between the core's subpackages running downward only, the add-on never importing the
core, and each subpackage's docstring agreeing with the README's Layout table."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 400
# Lower layers first: a subpackage may import only those before it (and protocol/errors).
LAYERS = ["media", "model", "faces", "quality", "sync", "jobs"]
PRODUCT_FILES = ["install.py", "release.py", "demo.py"]


def _modules(package: str) -> dict[str, Path]:
    base = ROOT / package
    found = {}
    for path in sorted(base.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _imports(name: str, path: Path, known: dict[str, Path]) -> list[tuple[str, str | None, int]]:
    """(module imported, name taken from it or None, line) for every import of one of `known`,
    wherever it is written (a lazy import inside a function still ties the two modules)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name if _is_package(path) else name.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in known:
                    out.append((alias.name, None, node.lineno))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base_parts = parts[:len(parts) - (node.level - 1)] if node.level > 1 else parts
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in known:  # `from package import module`
                    out.append((sub, None, node.lineno))
                elif base in known:
                    out.append((base, alias.name, node.lineno))
    return out


def _graph(package: str) -> tuple[dict[str, Path], dict[str, set[str]], list[str]]:
    known = _modules(package)
    graph: dict[str, set[str]] = {m: set() for m in known}
    private = []
    for name, path in known.items():
        for target, taken, line in _imports(name, path, known):
            if target != name:
                graph[name].add(target)
            if taken and taken.startswith("_") and not taken.startswith("__") and target != name:
                private.append(f"{path.relative_to(ROOT)}:{line} imports {taken} from {target}")
    return known, graph, private


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _without_packages(graph: dict[str, set[str]], known: dict[str, Path]) -> dict[str, set[str]]:
    # A package's __init__ that imports nothing is a folder, not a link: importing
    # `wav2lip_core.sync.plan` runs `wav2lip_core/sync/__init__.py`, but that file importing
    # nothing cannot close a circle. Only real edges count.
    return {m: set(t) for m, t in graph.items()}


@pytest.mark.parametrize("package", ["wav2lip_core", "blender_addon", "installer"])
def test_no_import_circles(package):
    known, graph, _ = _graph(package)
    circles = _cycles(_without_packages(graph, known))
    assert not circles, "import circles: " + "; ".join(" <-> ".join(c) for c in circles)


@pytest.mark.parametrize("package", ["wav2lip_core", "blender_addon", "installer"])
def test_no_private_names_imported_across_modules(package):
    _, _, private = _graph(package)
    assert not private, "\n".join(private)


def test_no_product_module_over_the_limit():
    files = [p for pkg in ("wav2lip_core", "blender_addon") for p in _modules(pkg).values()]
    files += [ROOT / f for f in PRODUCT_FILES if (ROOT / f).exists()]
    files += sorted((ROOT / "installer").glob("*.py"))
    long = [f"{p.relative_to(ROOT)}: {n} lines" for p in files
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES]
    assert not long, f"over {MAX_LINES} lines (split by what it does):\n" + "\n".join(long)


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) >= 2 and parts[1] in LAYERS:
        return LAYERS.index(parts[1])
    return None


def test_core_imports_run_downward():
    known, graph, _ = _graph("wav2lip_core")
    upward = []
    for src, targets in graph.items():
        s = _layer(src)
        for dst in targets:
            d = _layer(dst)
            if s is None:
                # top-level modules: protocol and errors import nothing of the core; the entry
                # points (__main__, pipeline, the package) may reach down into any layer.
                if src in ("wav2lip_core.protocol", "wav2lip_core.errors") and d is not None:
                    upward.append(f"{src} -> {dst}")
                continue
            if d is not None and d > s:
                upward.append(f"{src} -> {dst}")
    assert not upward, "imports that run upward (see each subpackage's docstring):\n" + "\n".join(sorted(upward))


def test_the_addon_never_imports_the_core():
    known = _modules("blender_addon")
    offenders = []
    for name, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            mods = ([a.name for a in node.names] if isinstance(node, ast.Import)
                    else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            if any(m == "wav2lip_core" or m.startswith("wav2lip_core.") or m in ("torch", "numpy", "cv2")
                   for m in mods):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, "the add-on loads protocol.py and the serve client by file only:\n" + "\n".join(offenders)


def _readme_layout() -> dict[str, str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Layout", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        m = re.match(r"^\|\s*`(wav2lip_core/[a-z_]+/)`\s*\|\s*(.+?)\s*\|$", line)
        if m:
            rows[m.group(1)] = m.group(2)
    return rows


def test_readme_layout_matches_the_subpackages():
    folders = sorted(f"wav2lip_core/{p.name}/" for p in (ROOT / "wav2lip_core").iterdir()
                     if (p / "__init__.py").is_file())
    assert folders == sorted(f"wav2lip_core/{n}/" for n in LAYERS)
    rows = _readme_layout()
    assert sorted(rows) == folders, "README's Layout table and the folders differ"
    for folder in folders:
        doc = ast.get_docstring(ast.parse((ROOT / folder / "__init__.py").read_text(encoding="utf-8"))) or ""
        modules = sorted(p.stem for p in (ROOT / folder).glob("*.py") if p.stem != "__init__")
        # Every module of the folder is named in its docstring and in the README's row.
        for mod in modules:
            assert re.search(rf"\b{mod}\b", doc), f"{folder}__init__.py's docstring does not name {mod}"
            assert re.search(rf"\b{mod}\b", rows[folder]), f"README's Layout row for {folder} does not name {mod}"
        assert "May import" in doc, f"{folder}__init__.py does not say what it may import"


def test_the_documented_entry_points_still_import():
    # The README's `from wav2lip_core.pipeline import LipSyncRequest, run` and the console script.
    import importlib

    shim = importlib.import_module("wav2lip_core.pipeline")
    real = importlib.import_module("wav2lip_core.sync.pipeline")
    assert shim.run is real.run and shim.LipSyncRequest is real.LipSyncRequest
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    target = re.search(r'^wav2lip = "([\w.]+):(\w+)"', text, re.M)
    assert target, "pyproject.toml has no wav2lip console script"
    assert callable(getattr(importlib.import_module(target.group(1)), target.group(2)))
    assert "from wav2lip_core.pipeline import LipSyncRequest, run" in (ROOT / "README.md").read_text(encoding="utf-8")
