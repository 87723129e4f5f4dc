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
    assert {"selfsup.train", "selfsup.eval", "selfsup.methods", "selfsup.lab", "selfsup.config"} <= set(graph)
    assert "selfsup.train" in graph["selfsup.pretraining"] and "selfsup.eval" in graph["selfsup.pretraining"]
    assert "selfsup.config" in graph["selfsup.train"]
    # A planted cycle is found.
    assert find_cycle({**graph, "selfsup.config": graph["selfsup.config"] | {"selfsup.train"}}) is not None


def test_no_import_cycles() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle or [])


def _imports(path: Path) -> set[str]:
    """The selfsup modules (and packages) ``path`` imports, TYPE_CHECKING imports aside."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    skip = _type_checking_lines(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name == "selfsup" or _is_module(a.name))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names]
            found.update(n for n in names if _is_module(n))
            if not any(_is_module(n) for n in names) and (base == "selfsup" or _is_module(base)):
                found.add(base)
    return found


def module_graph(folder: Path) -> dict[str, set[str]]:
    """Module -> the modules of the same folder it imports (the folder's ``__init__`` excluded)."""
    modules = {_module_name(p): p for p in folder.glob("*.py") if p.name != "__init__.py"}
    return {m: {t for t in _imports(p) if t in modules and t != m} for m, p in modules.items()}


def test_no_import_cycles_inside_a_folder() -> None:
    folders = [SRC, *sorted(p for p in SRC.rglob("*") if p.is_dir() and (p / "__init__.py").is_file())]
    cycles = {str(f.relative_to(SRC.parent)): c for f in folders if (c := find_cycle(module_graph(f)))}
    assert cycles == {}
    # A planted cycle is found.
    planted = module_graph(SRC / "augment")
    planted["selfsup.augment.presets"] = planted["selfsup.augment.presets"] | {"selfsup.augment.batch"}
    assert find_cycle(planted) is not None


def test_nothing_low_imports_the_package_face() -> None:
    """Only the command line (the top layer) may import ``selfsup`` itself."""
    low = [p for p in SRC.rglob("*.py") if p.relative_to(SRC).parts[0] not in ("__init__.py", "__main__.py", "cli.py")]
    offenders = sorted(str(p.relative_to(SRC)) for p in low if "selfsup" in _imports(p))
    assert offenders == []


def test_the_core_does_not_import_the_lab() -> None:
    """Sweeps, records and reports (``selfsup.lab``) sit on the core; only the command line reaches into them."""
    core = [p for p in SRC.rglob("*.py") if p.relative_to(SRC).parts[0] not in ("lab", "cli.py", "__init__.py")]
    offenders = sorted(str(p.relative_to(SRC)) for p in core if any(t.startswith("selfsup.lab") for t in _imports(p)))
    assert offenders == []


MAX_LINES = 60
MAX_PARAMETERS = 8


def long_functions() -> list[str]:
    """Functions over MAX_LINES lines, from ``def`` to their last line, docstring included."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > MAX_LINES:
                    found.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({n} lines)")
    return found


def many_parameters() -> list[str]:
    """Functions that take more than MAX_PARAMETERS parameters (``self`` and ``cls`` aside): pass a record instead."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            a = node.args
            names = [x.arg for x in [*a.posonlyargs, *a.args, *a.kwonlyargs]]
            names += [x.arg for x in (a.vararg, a.kwarg) if x is not None]
            n = len([x for x in names if x not in ("self", "cls")])
            if n > MAX_PARAMETERS:
                found.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({n} parameters)")
    return found


def test_functions_are_short() -> None:
    assert long_functions() == []


def test_functions_take_few_parameters() -> None:
    assert many_parameters() == []


def test_init_files_are_faces() -> None:
    """An ``__init__.py`` is a package's face: its exports, a registry at most; code lives in named modules."""
    long = [
        f"{p.relative_to(SRC)} ({n} lines)"
        for p in sorted(SRC.rglob("__init__.py"))
        if (n := len(p.read_text().splitlines())) > 100
    ]
    assert long == []
