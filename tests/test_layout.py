"""The layers of edgernn/ (docs/ARCHITECTURE.md), checked from the source alone (ast, no imports run).

Every import counts, at module level or inside a function, `__import__("x")` and
`importlib.import_module("x")` with a literal name included: an import deferred to a function
still ties the two modules together. `from edgernn.x import y` is an import of the module
edgernn.x.y when y is one, else of edgernn.x.

The checker is plain functions over a root folder (the one holding edgernn/); the tests at the end
run it on small trees written to tmp_path, so each rule is seen to fail.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 400
HEAVY = ("torch", "onnxruntime", "click")  # what core never imports
RUNTIME_SIDE = ("edgernn.runtime", "edgernn.audio")  # torch-free, and below train/export/cli/serve
NOT_FROM_RUNTIME = ("torch", "edgernn.train", "edgernn.export", "edgernn.cli", "edgernn.serve")


# ---------------------------------------------------------------- reading the tree


def modules(root) -> dict[str, Path]:
    """{dotted name: file} for every .py under root/edgernn; a package is named by its __init__.py."""
    root = Path(root)
    out = {}
    for path in sorted((root / "edgernn").rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _literal_import(node: ast.Call) -> str | None:
    """The module named by __import__("x") or importlib.import_module("x"), if literal."""
    f = node.func
    named = (isinstance(f, ast.Name) and f.id == "__import__") or \
        (isinstance(f, ast.Attribute) and f.attr == "import_module")
    if named and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
        return node.args[0].value
    return None


def imports(name: str, path: Path, known) -> list[tuple[int, str]]:
    """(line, imported module) for every import anywhere in the file `path` of module `name`;
    `known`: the tree's module names, to tell `from pkg import submodule` from `from pkg import name`."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x / from ..core import y
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.append((node.lineno, sub if sub in known else base))
        elif isinstance(node, ast.Call) and (target := _literal_import(node)):
            out.append((node.lineno, target))
    return out


def graph(root) -> dict[str, list[tuple[int, str]]]:
    """{module: [(line, imported module), ...]} over the whole tree, every import kept."""
    mods = modules(root)
    return {name: imports(name, path, mods) for name, path in mods.items()}


def _within(module: str, prefixes) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _where(root, mods, name, line) -> str:
    return f"{mods[name].relative_to(root).as_posix()}:{line}"


# ---------------------------------------------------------------- the rules


def layer_violations(root) -> list[str]:
    """Rules (a) to (c): one line per import that crosses a layer the wrong way."""
    root, mods, out = Path(root), modules(root), []
    for name, edges in graph(root).items():
        for line, target in edges:
            where = _where(root, mods, name, line)
            if _within(name, ("edgernn.core",)):
                if target.startswith("edgernn") and not _within(target, ("edgernn.core",)):
                    out.append(f"{where}: core imports {target}; core imports nothing of edgernn outside core: "
                               "move the shared piece into edgernn/core or the import up a layer")
                elif _within(target, HEAVY):
                    out.append(f"{where}: core imports {target}; core stays free of {', '.join(HEAVY)}")
            if _within(name, RUNTIME_SIDE) and _within(target, NOT_FROM_RUNTIME):
                out.append(f"{where}: {name} imports {target}; the runtime side (runtime, audio) never imports "
                           f"{', '.join(NOT_FROM_RUNTIME)}: put the code that needs it in train/export/cli")
            if _within(target, ("edgernn.cli",)) and not _within(name, ("edgernn.cli", "edgernn.__main__")):
                out.append(f"{where}: {name} imports {target}; only edgernn/cli (and __main__) imports the CLI: "
                           "move what both need below it")
    return out


def oversized(root, limit: int = MAX_LINES) -> list[str]:
    """Rule (d): modules over `limit` lines."""
    root = Path(root)
    out = []
    for path in modules(root).values():
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > limit:
            out.append(f"{path.relative_to(root).as_posix()}: {n} lines > {limit}; split it by concept")
    return out


def cycles(root) -> list[list[str]]:
    """Rule (e): the loops among edgernn modules (self-imports aside): for each group that imports one
    another (a strongly connected component of the import graph), shortest loops [a, b, ..., a] until
    every module of the group is on one."""
    g = graph(root)
    edges = {m: sorted({t for _, t in es if t in g and t != m}) for m, es in g.items()}
    index, low, stack, on, groups = {}, {}, [], set(), []

    def visit(v):  # Tarjan; the tree is a few dozen modules, recursion is fine
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    loops = []
    for group in sorted(groups):
        covered = set()
        for start in group:
            if start not in covered:
                loops.append(_loop(edges, group, start))
                covered.update(loops[-1])
    return loops


def _loop(edges, group, start) -> list[str]:
    """A shortest loop from `start` back to it, inside the group (breadth-first)."""
    inside = set(group)
    paths, seen = [[start]], {start}
    while paths:
        nxt = []
        for p in paths:
            for w in edges[p[-1]]:
                if w == start:
                    return p + [start]
                if w in inside and w not in seen:
                    seen.add(w)
                    nxt.append(p + [w])
        paths = nxt
    raise AssertionError(group)  # a strongly connected group always loops back


def _top_level_names(path: Path) -> set[str]:
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def stale_mentions(root, docs) -> list[str]:
    """Paths (edgernn/x/y.py) and dotted names (edgernn.x.y.Name) in the text files `docs` that
    name no file, module or top-level name of the tree: what a move leaves behind in the docs."""
    root, mods, out = Path(root), modules(root), []
    for doc in docs:
        text = (root / doc).read_text(encoding="utf-8")
        for m in re.finditer(r"(?<![\w/.-])edgernn/[\w/.-]*\w", text):
            if not (root / m.group()).exists():
                out.append(f"{doc}: {m.group()}: no such file")
        for m in re.finditer(r"(?<![\w/.-])edgernn(?:\.\w+)+", text):
            parts = m.group().split(".")
            k = max(i for i in range(1, len(parts) + 1) if ".".join(parts[:i]) in mods)
            rest = parts[k:]
            if (k == 1 and rest and rest[0] not in ("__version__",)) or \
                    (rest and k > 1 and rest[0] not in _top_level_names(mods[".".join(parts[:k])])):
                out.append(f"{doc}: {m.group()}: no such module or name")
    return out


# ---------------------------------------------------------------- edgernn itself


def test_layers_import_downwards_only():
    assert layer_violations(ROOT) == []


def test_no_module_over_400_lines():
    assert oversized(ROOT) == []


def test_no_import_cycles():
    found = cycles(ROOT)
    assert found == [], "import cycles (function-level imports count):\n" + "\n".join(" -> ".join(c) for c in found)


def test_the_docs_name_modules_that_exist():
    docs = ["README.md"] + sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md"))
    assert "docs/ARCHITECTURE.md" in docs
    assert stale_mentions(ROOT, docs) == []


def test_the_checker_sees_the_whole_package():
    names = modules(ROOT)
    assert {"edgernn.core.errors", "edgernn.runtime.engine", "edgernn.cli.app", "edgernn.train.tasks"} <= set(names)
    edges = {t for _, t in graph(ROOT)["edgernn.cli.stream"]}
    assert "edgernn.runtime.lookahead" in edges and "edgernn.cli.output" in edges  # inside functions too


# ---------------------------------------------------------------- the checker on small trees


def _tree(tmp_path, files: dict[str, str]) -> Path:
    for rel, text in {"edgernn/__init__.py": "", **files}.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        (p.parent / "__init__.py").touch()
        p.write_text(text)
    return tmp_path


def test_checker_catches_torch_in_the_runtime(tmp_path):
    root = _tree(tmp_path, {"edgernn/runtime/fast.py": "import numpy\n\ndef f():\n    import torch.nn\n",
                            "edgernn/audio/mel.py": "from edgernn.train import loop\n",
                            "edgernn/runtime/lazy.py": "def g():\n    return __import__('edgernn.export.graph')\n"})
    found = layer_violations(root)
    assert found[2].startswith("edgernn/runtime/lazy.py:2: edgernn.runtime.lazy imports edgernn.export.graph")
    assert len(found) == 3 and found[0].startswith("edgernn/audio/mel.py:1: edgernn.audio.mel imports edgernn.train")
    assert found[1].startswith("edgernn/runtime/fast.py:4: edgernn.runtime.fast imports torch.nn")


def test_checker_catches_core_reaching_up(tmp_path):
    root = _tree(tmp_path, {"edgernn/core/spec.py": "from edgernn.runtime import engine\nfrom . import meta\n",
                            "edgernn/core/meta.py": "from ..core.spec import X\nimport click\n",
                            "edgernn/runtime/engine.py": ""})
    assert [v.split(";")[0] for v in layer_violations(root)] == [
        "edgernn/core/meta.py:2: core imports click", "edgernn/core/spec.py:1: core imports edgernn.runtime.engine"]


def test_checker_catches_the_cli_imported_from_below(tmp_path):
    root = _tree(tmp_path, {"edgernn/serve/x.py": "import importlib\nimportlib.import_module('edgernn.cli.app')\n",
                            "edgernn/cli/app.py": "", "edgernn/__main__.py": "from edgernn.cli.app import main\n"})
    assert [v.split(";")[0] for v in layer_violations(root)] == ["edgernn/serve/x.py:2: edgernn.serve.x imports edgernn.cli.app"]


def test_checker_catches_a_cycle_through_a_function_level_import(tmp_path):
    root = _tree(tmp_path, {"edgernn/runtime/a.py": "def f():\n    from edgernn.runtime import b\n",
                            "edgernn/runtime/b.py": "from edgernn.runtime.a import f\n",
                            "edgernn/runtime/c.py": "from edgernn.runtime import a, b\n"})
    assert cycles(root) == [["edgernn.runtime.a", "edgernn.runtime.b", "edgernn.runtime.a"]]
    (root / "edgernn/runtime/a.py").write_text("def f():\n    from edgernn.runtime import c\n")  # a -> c -> a, b
    assert [" ".join(m[-1] for m in c) for c in cycles(root)] == ["a c a", "b a c b"]


def test_checker_reads_from_pkg_import_name_as_the_package(tmp_path):
    root = _tree(tmp_path, {"edgernn/runtime/__init__.py": "from edgernn.runtime.engine import Runtime\n",
                            "edgernn/runtime/engine.py": "from edgernn.runtime import Runtime\n"})
    assert cycles(root) == [["edgernn.runtime", "edgernn.runtime.engine", "edgernn.runtime"]]


def test_checker_catches_a_long_module(tmp_path):
    root = _tree(tmp_path, {"edgernn/core/long.py": "x = 1\n" * 401, "edgernn/core/ok.py": "x = 1\n" * 400})
    assert oversized(root) == ["edgernn/core/long.py: 401 lines > 400; split it by concept"]


@pytest.mark.parametrize("text", ["import numpy\nfrom edgernn.core import errors\n", "import onnx\n"])
def test_checker_passes_what_the_rules_allow(tmp_path, text):
    root = _tree(tmp_path, {"edgernn/runtime/ok.py": text, "edgernn/core/errors.py": "import onnx\n",
                            "edgernn/cli/app.py": "import torch\nfrom edgernn.runtime import ok\n"})
    assert layer_violations(root) == [] and cycles(root) == [] and oversized(root) == []


def test_checker_catches_docs_naming_moved_modules(tmp_path):
    root = _tree(tmp_path, {"edgernn/runtime/native.py": "class NativeSession:\n    pass\n",
                            "README.md": "`edgernn/native.py`, `edgernn/runtime/native.py`, `edgernn.native.X`,\n"
                                         "`edgernn.runtime.native.NativeSession`, `edgernn.runtime.native.Gone`.\n"})
    assert stale_mentions(root, ["README.md"]) == [
        "README.md: edgernn/native.py: no such file", "README.md: edgernn.native.X: no such module or name",
        "README.md: edgernn.runtime.native.Gone: no such module or name"]
