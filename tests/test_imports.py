"""The package's import graph: no cycles, no private names imported across modules, imports at the top
of every module (a local import carries a comment saying why: an optional or heavy dependency), and
the core modules import the package itself only at the top."""
import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "neurotwin_dash"
#: modules whose imports all sit at the top, except commented heavy/optional third-party ones
TOP_LEVEL_ONLY = ["simulate", "sweep", "twin", "params", "connectome", "catalog", "ui/state", "fit/*",
                  "models/*"]


def _modules():
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


MODULES = _modules()


def _imports(name):
    """(target module, imported name or None, line, inside a function) of every package import."""
    path, is_pkg = MODULES[name]
    tree = ast.parse(path.read_text())
    found = []

    def visit(node, in_func):
        for child in ast.iter_child_nodes(node):
            inner = in_func or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for a in child.names:
                    found.append((a.name, None, child.lineno, in_func))
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[:len(base) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module
                for a in child.names:
                    sub = f"{target}.{a.name}"
                    found.append((sub, None, child.lineno, in_func) if sub in MODULES
                                 else (target, a.name, child.lineno, in_func))
            visit(child, inner)
    visit(tree, False)
    return found


def test_the_package_has_no_import_cycles():
    graph = {m: {t for t, _, _, _ in _imports(m) if t in MODULES and t != m and not m.startswith(t + ".")}
             for m in MODULES}
    index, low, stack, on, cycles = {}, {}, [], set(), []

    def strong(v):                                     # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))
    for v in graph:
        if v not in index:
            strong(v)
    assert cycles == []


def test_no_private_name_is_imported_from_another_module():
    bad = [f"{m}:{line} imports {t}.{n}" for m in MODULES for t, n, line, _ in _imports(m)
           if n and n.startswith("_") and not n.startswith("__") and t in MODULES and t != m]
    assert bad == []


def _core(pattern):
    names = [m for m in MODULES if m == "neurotwin_dash." + pattern.replace("/", ".")
             or (pattern.endswith("/*") and m.startswith("neurotwin_dash." + pattern[:-2].replace("/", ".") + "."))]
    assert names, pattern
    return names


CORE = {m for pattern in TOP_LEVEL_ONLY for m in _core(pattern)}


def _has_comment(lines, line) -> bool:
    # the comment sits on the import or on one of the few lines before it (one comment for
    # ``import matplotlib; matplotlib.use(...); import matplotlib.pyplot``)
    return any("#" in text for text in lines[max(0, line - 4):line])


@pytest.mark.parametrize("pattern", TOP_LEVEL_ONLY)
def test_core_modules_import_the_package_at_the_top(pattern):
    for m in _core(pattern):
        for target, _, line, in_func in _imports(m):
            assert not (in_func and target.startswith("neurotwin_dash")), f"{m}:{line}: import {target} at the top"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_local_import_says_why(module):
    """Imports sit at the top of every module; one inside a function is an optional or heavy
    dependency (or a package module that pulls one in) and carries a comment saying why."""
    lines = MODULES[module][0].read_text().splitlines()
    for target, _, line, in_func in _imports(module):
        if in_func:
            assert _has_comment(lines, line), f"{module}:{line}: a local import of {target} needs a comment saying why"


def test_the_rule_sees_local_imports():
    # the checker itself: a commented local import of a heavy package is found as local
    assert any(in_func and target == "torch" for target, _, _, in_func in _imports("neurotwin_dash.infer.posterior"))
    assert CORE <= set(MODULES)
