"""The code base's shape: no import circles among ck_plugins' modules (imports inside functions and under
TYPE_CHECKING count too: a circle is a circle wherever the import sits)."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "ck_plugins"


def module_of(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    path = PACKAGE.parent / name.replace(".", "/")
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports_of(path: Path) -> set[str]:
    """Every module of ours that `path` imports, by its full name."""
    name = module_of(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                full = f"{module}.{alias.name}"
                found.add(full if is_module(full) else module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m.startswith("ck_plugins") and m != name and is_module(m)}


def graph() -> dict[str, set[str]]:
    return {module_of(path): imports_of(path) for path in PACKAGE.rglob("*.py")}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iteratively)."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], [0]
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_circle_and_only_circles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_no_import_circles_in_ck_plugins():
    edges = graph()
    assert "ck_plugins.files" in edges["ck_plugins.ckrepo"]  # the graph is read (relative imports resolved)
    found = cycles(edges)
    assert not found, "import circles: " + "; ".join(" -> ".join(c) for c in found)


def sources() -> dict[Path, str]:
    return {path: path.read_text() for path in PACKAGE.rglob("*.py")}


def test_only_the_point_module_names_point_files_or_walks_the_raw_point():
    """The point's room: CK's subpoint file names (`ckp-`) and the raw dict's `choices` and `characteristics_list`
    are reached through ck_plugins/point.py's functions only."""
    import re

    raw = re.compile(r"""\[["'](choices|characteristics_list)["']\]|\.get\(["'](choices|characteristics_list)["']""")
    outside = {str(path.relative_to(PACKAGE)): text for path, text in sources().items() if path.name != "point.py"}
    assert "ckp-" in (PACKAGE / "point.py").read_text()
    assert [name for name, text in outside.items() if "ckp-" in text] == []
    assert [name for name, text in outside.items() if raw.search(text)] == []
