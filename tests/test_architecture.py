"""The package's layers: no import cycles between its modules and subpackages."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "selfsup"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _node(module: str) -> str:
    """The layer a module belongs to: its subpackage (selfsup.train), or itself (selfsup.config)."""
    parts = module.split(".")
    is_subpackage = len(parts) > 2 or (len(parts) == 2 and (SRC / parts[1]).is_dir())
    return ".".join(parts[:2]) if is_subpackage else module


def _is_module(name: str) -> bool:
    """Whether ``name`` is a module or package of selfsup (not a function imported from one)."""
    where = SRC.parent / name.replace(".", "/")
    return name.startswith("selfsup.") and (where.with_suffix(".py").is_file() or where.is_dir())


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def import_graph() -> dict[str, set[str]]:
    """Layer -> the layers it imports (every import, in functions too, but not TYPE_CHECKING ones)."""
    graph: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        module = _module_name(path)
        if module in ("selfsup", "selfsup.__main__"):
            continue  # the package's front door imports everything; nothing imports it back
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        tree = ast.parse(path.read_text())
        skip = _type_checking_lines(tree)
        edges = graph.setdefault(_node(module), set())
        for node in ast.walk(tree):
            if getattr(node, "lineno", None) in skip:
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            for target in targets:
                if _is_module(target) and _node(target) != _node(module):
                    edges.add(_node(target))
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of layers, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m) :] + [m]
            if m not in state and (found := visit(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_the_graph_sees_the_layers() -> None:
    graph = import_graph()
    assert {"selfsup.train", "selfsup.eval", "selfsup.methods", "selfsup.experiments", "selfsup.config"} <= set(graph)
    assert "selfsup.train" in graph["selfsup.pretraining"] and "selfsup.eval" in graph["selfsup.pretraining"]
    assert "selfsup.config" in graph["selfsup.train"]
    # A planted cycle is found.
    assert find_cycle({**graph, "selfsup.config": graph["selfsup.config"] | {"selfsup.train"}}) is not None


def test_no_import_cycles() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle or [])


MAX_LINES = 60


def long_functions() -> list[str]:
    """Functions whose body (docstring aside) exceeds MAX_LINES without a ``# long:`` comment saying why."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text()
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            first = node.body[0]
            has_doc = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
            start = (first.end_lineno or first.lineno) + 1 if has_doc else first.lineno
            body = lines[start - 1 : node.end_lineno]
            if len(body) > MAX_LINES and not any("# long:" in line for line in body):
                found.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({len(body)} lines)")
    return found


def test_functions_are_short_or_say_why() -> None:
    assert long_functions() == []


def test_init_files_are_faces() -> None:
    """An ``__init__.py`` is a package's face: its exports, a registry at most; code lives in named modules."""
    long = [
        f"{p.relative_to(SRC)} ({n} lines)"
        for p in sorted(SRC.rglob("__init__.py"))
        if (n := len(p.read_text().splitlines())) > 100
    ]
    assert long == []
