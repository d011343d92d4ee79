"""The package's layering (issue 16): no import cycle, no import from a lower layer to a higher one.

Walks every ``import``/``from … import`` in ``src/lrprec`` (function-level ones included) with
:mod:`ast`; ``from lrprec.x import y`` counts as an import of the submodule ``lrprec.x.y`` when
that is a module, else of ``lrprec.x``.
"""
from __future__ import annotations

import ast
from pathlib import Path

import lrprec

ROOT = Path(lrprec.__file__).parent
# Lower layers never import higher ones. Same-layer packages may not import each other either.
LAYERS = {
    "errors": 0, "jsonable": 0, "defaults": 0, "files": 0, "data": 1, "model": 2, "run": 3, "explain": 4,
    "evaluate": 5, "recommend": 5, "report": 6, "train": 6,
    "app": 7, "demo": 8, "serve": 8, "cli": 9, "__main__": 10,
}


def _modules() -> dict[str, Path]:
    out = {}
    for p in ROOT.rglob("*.py"):
        parts = ("lrprec",) + p.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _edges(mods: dict[str, Path]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.split(".")[0] == "lrprec":
                for a in node.names:
                    sub = f"{node.module}.{a.name}"
                    edges[m].add(sub if sub in mods else node.module)
            elif isinstance(node, ast.Import):
                edges[m].update(a.name for a in node.names if a.name.split(".")[0] == "lrprec")
            elif isinstance(node, ast.ImportFrom) and node.level:
                raise AssertionError(f"{p}: relative import; use absolute lrprec.… imports")
    return edges


def _layer(mod: str) -> tuple[str, int]:
    parts = mod.split(".")
    if len(parts) == 1:  # lrprec/__init__.py
        return "", -1
    return parts[1], LAYERS[parts[1]]


def test_every_package_has_a_layer():
    missing = sorted({m.split(".")[1] for m in _modules() if "." in m} - set(LAYERS))
    assert not missing, f"add these packages/modules to LAYERS: {missing}"


def test_no_import_reaches_up_or_across_a_layer():
    mods = _modules()
    bad = []
    for a, bs in _edges(mods).items():
        pa, la = _layer(a)
        for b in bs:
            pb, lb = _layer(b)
            if pa != pb and (lb > la or (lb == la and pb)):
                bad.append(f"{a} -> {b}  ({pa} is layer {la}, {pb} layer {lb})")
    assert not bad, "imports against the layering:\n" + "\n".join(sorted(bad))


def test_no_import_cycle():
    mods = _modules()
    graph = {a: {b for b in bs if b in mods and b != a} for a, bs in _edges(mods).items()}
    # a package's __init__ importing its own submodules is how packages export names; a submodule
    # importing its package's __init__ back would close a cycle and is reported
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:
        state[v] = 1
        stack.append(v)
        for w in sorted(graph[v]):
            if state.get(w) == 1:
                cycles.append(stack[stack.index(w):] + [w])
            elif w not in state:
                visit(w)
        stack.pop()
        state[v] = 2

    for v in sorted(graph):
        if v not in state:
            visit(v)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_walker_sees_imports_and_would_report_a_violation(monkeypatch):
    edges = _edges(_modules())
    assert "lrprec.data.rules" in edges["lrprec.train.trainer"]  # module-level
    assert "lrprec.data.splits" in edges["lrprec.data.writer"]
    monkeypatch.setitem(LAYERS, "data", 7)  # data above train: the trainer's import must be reported
    with __import__("pytest").raises(AssertionError, match="lrprec.train.trainer -> lrprec.data"):
        test_no_import_reaches_up_or_across_a_layer()
