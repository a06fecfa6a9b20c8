"""The package's shape stays as the style guide asks (docs: STYLE section 3): no import circle
between its modules (imports inside functions included, ``if TYPE_CHECKING:`` blocks left out), no
module over 300 lines, no function over 60 lines, and no module-level switch the pipeline reads."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "pnpovss"
MAX_MODULE_LINES = 300
MAX_FUNCTION_LINES = 60


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The package modules ``path`` imports at run time (anywhere in the file)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in modules)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in modules else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return {m for m in found if m in modules and m != name}


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: _imports(path, set(files)) for name, path in files.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
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
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return out


def test_the_graph_sees_imports_inside_functions():
    graph = _graph()
    assert "pnpovss.reward" in graph["pnpovss.factory"]  # imported inside load_presence_clip
    assert "pnpovss.steps" in graph["pnpovss.pipeline"] and "pnpovss.prepacked" in graph["pnpovss.backbones.blip"]


def test_no_import_circle_in_the_package():
    assert _cycles(_graph()) == []
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]  # the check can fail


def test_no_module_over_300_lines_and_no_function_over_60():
    too_long, long_functions = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{path.relative_to(PACKAGE)}: {len(text.splitlines())}")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1  # from ``def`` on: option decorators not counted
                if lines > MAX_FUNCTION_LINES:
                    long_functions.append(f"{path.relative_to(PACKAGE)}:{node.name}: {lines}")
    assert too_long == [] and long_functions == []


def test_no_module_level_switch():
    """Execution choices are an explicit options object (pnpovss.execution), never a module-level
    flag set from outside (``prepacked.enabled = False`` once was): no lowercase module-level name
    bound to a plain constant, and no ``global`` rebinding one."""
    switches = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Constant):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                switches += [f"{path.relative_to(PACKAGE)}:{t.id}" for t in targets
                             if isinstance(t, ast.Name) and not t.id.isupper() and not t.id.startswith("__")]
        switches += [f"{path.relative_to(PACKAGE)}: global {', '.join(n.names)}" for n in ast.walk(tree)
                     if isinstance(n, ast.Global)]
    assert switches == []
    from pnpovss import precision, prepacked

    assert not hasattr(prepacked, "enabled") and not hasattr(precision, "TEXT_REDUCED")
