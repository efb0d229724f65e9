"""The package's layout holds: no import cycles, and each package imports only the layers its
``__init__`` docstring allows (its ``May import:`` line). Read with ast, nothing imported."""

import ast
import pathlib
import re

import tfchargen

ROOT = pathlib.Path(tfchargen.__file__).parent
TOP_MODULES = {"contract", "config"}  # plain facts below every package; they import no tfchargen module
SHIMS = {"client", "server"}  # public re-exports for users: nothing inside tfchargen imports them


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: pathlib.Path) -> set[str]:
    """The tfchargen modules a file imports (``from tfchargen.x import y`` counts y if it is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("tfchargen.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and node.module.split(".")[0] == "tfchargen":
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                found.add(sub if module_path(sub) else node.module)
    return {m for m in found if m != "tfchargen"}


def module_path(name: str) -> pathlib.Path | None:
    base = ROOT.parent.joinpath(*name.split("."))
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.exists():
            return p
    return None


GRAPH = {module_name(p): imports(p) for p in sorted(ROOT.rglob("*.py"))}


def find_cycle(graph: dict) -> list | None:
    """One import cycle as a list of modules, or None (depth-first search)."""
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == "open":
                return stack[stack.index(n):] + [n]
            if n not in state:
                cycle = visit(n)
                if cycle:
                    return cycle
        state[m] = "done"
        stack.pop()
        return None

    for m in sorted(graph):
        if m not in state:
            cycle = visit(m)
            if cycle:
                return cycle
    return None


def layer(module: str) -> str:
    """A module's layer: its package (tfchargen.data.vocab -> data) or top-level name."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def allowed(package: str) -> set[str] | None:
    """The layers a package's docstring allows (None: every one)."""
    doc = ast.get_docstring(ast.parse((ROOT / package / "__init__.py").read_text(encoding="utf-8"))) or ""
    line = re.search(r"^May import: (.*)$", doc, flags=re.M)
    assert line, f"tfchargen/{package}/__init__.py: its docstring has no 'May import:' line"
    if line.group(1).startswith("every package"):
        return None
    names = line.group(1).split("(")[0]  # a parenthesis explains, it names no layer
    return {n.strip(" .") for n in names.split(",")} - {"nothing of tfchargen"}


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycles():
    assert len(GRAPH) > 30, sorted(GRAPH)  # the walk found the package
    assert find_cycle(GRAPH) is None, " -> ".join(find_cycle(GRAPH))


def test_each_package_imports_only_the_layers_its_docstring_allows():
    packages = sorted(p.parent.name for p in ROOT.glob("*/__init__.py"))
    assert {"cli", "common", "data", "generation", "model", "savedmodel", "serving", "training"} <= set(packages)
    wrong = []
    for package in packages:
        ok = allowed(package)
        for module, deps in GRAPH.items():
            if module.split(".")[1:2] != [package]:
                continue
            for dep in deps:
                if layer(dep) == package or ok is None:
                    continue
                if layer(dep) not in ok and ".".join(dep.split(".")[1:3]) not in ok:
                    wrong.append(f"{module} imports {dep} (tfchargen/{package}/__init__.py allows {sorted(ok)})")
    assert not wrong, "\n".join(wrong)


def test_plain_facts_and_shims_stay_at_the_edges():
    for name in TOP_MODULES:
        assert not GRAPH[f"tfchargen.{name}"], f"tfchargen.{name} must import no tfchargen module"
    users = {m: deps & {f"tfchargen.{s}" for s in SHIMS} | {d for d in deps if layer(d) == "cli"}
             for m, deps in GRAPH.items() if layer(m) not in ("cli", "__main__")}
    assert not any(users.values()), {m: d for m, d in users.items() if d}
