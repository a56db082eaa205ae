"""The package's layers are true: every import (lazy ones inside functions included) goes to the
same layer or one below it, as the table in docs/ARCHITECTURE.md says, and no modules import
each other in a cycle."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "genworld"
ARCHITECTURE = ROOT / "docs" / "ARCHITECTURE.md"


def layer_table(text: str) -> list[tuple[str, list[str]]]:
    """(layer, [module paths relative to the package]) from the doc's table, bottom first."""
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or cells[0] in ("layer", "") or set(cells[0]) <= {"-"}:
            continue
        paths = re.findall(r"`([\w/.]+(?:\.py|/))`", cells[1])
        if paths:
            rows.append((cells[0], paths))
    return rows


def module_name(path: Path, package: Path) -> str:
    parts = ["genworld", *path.relative_to(package).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module → the genworld modules it imports anywhere in its source."""
    files = {module_name(p, package): p for p in package.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                found = [a.name for a in node.names]
            else:
                continue
            targets |= {t for t in found if t in files and t != name}
        graph[name] = targets
    return graph


def layer_of(module: str, table: list[tuple[str, list[str]]]) -> int | None:
    """Index of the layer whose path matches ``module`` (the longest match wins)."""
    rel = module.split(".", 1)[1] if "." in module else "__init__"
    best: tuple[int, int] | None = None
    for index, (_, paths) in enumerate(table):
        for path in paths:
            stem = path.removesuffix(".py").rstrip("/").replace("/", ".")
            inside = rel.startswith(stem + ".") and path.endswith("/")
            if (rel == stem or inside) and (best is None or len(stem) > best[1]):
                best = (index, len(stem))
    return None if best is None else best[0]


def violations(graph: dict[str, set[str]], table: list[tuple[str, list[str]]]) -> list[str]:
    """Modules in no layer, and imports from a higher layer, as readable lines."""
    found = []
    for module in sorted(graph):
        if layer_of(module, table) is None:
            found.append(f"{module} is in no layer of docs/ARCHITECTURE.md")
    for module in sorted(graph):
        low = layer_of(module, table)
        for target in sorted(graph[module]):
            high = layer_of(target, table)
            if low is not None and high is not None and high > low:
                found.append(
                    f"{module} ({table[low][0]}) imports {target} ({table[high][0]}): upward"
                )
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


def test_the_doc_names_the_layers_bottom_to_top():
    names = [name for name, _ in layer_table(ARCHITECTURE.read_text())]
    assert names[0] == "contracts" and names[-1] == "surface"
    assert names.index("evaluation") < names.index("training") < names.index("reports")
    assert names.index("agents") < names.index("training")


def test_every_import_goes_to_the_same_layer_or_below():
    table = layer_table(ARCHITECTURE.read_text())
    assert violations(import_graph(), table) == []


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_an_upward_import_or_a_cycle_is_caught(tmp_path):
    """The checks fail on a tree with an upward import and a cycle (a copy, edited)."""
    import shutil

    copy = tmp_path / "genworld"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "assets"))
    rollout = copy / "eval" / "rollout.py"
    rollout.write_text(rollout.read_text() + "\n\ndef _x():\n    import genworld.train.loop\n")
    graph = import_graph(copy)
    table = layer_table(ARCHITECTURE.read_text())
    assert any(
        "genworld.eval.rollout (evaluation) imports genworld.train.loop" in v
        for v in violations(graph, table)
    )
    assert ["genworld.eval.rollout", "genworld.train.loop"] in [
        sorted(set(g) & {"genworld.eval.rollout", "genworld.train.loop"}) for g in cycles(graph)
    ]
