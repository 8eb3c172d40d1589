"""The package's import graph: no module imports one that imports it back, and `rag_sft.io`'s
sub-packages keep the order its docstring gives.

Every import statement counts, at a module's top or inside a function (an import moved into a
function to break a circle is still a circle). Imports under `if TYPE_CHECKING:` do not: they
never run, and only let an annotation name the class of a module that calls this one.

    python -m pytest -q rag_sft_tests/test_layout.py
"""

import grimp
import pytest

PACKAGE = "rag_sft"
# rag_sft.io from the top down: a sub-package may import those after it, never one before it.
IO_LAYERS = ("erasure", "sources", "state", "llm", "registry", "storage", "sql_urls")


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(PACKAGE, cache_dir=None, exclude_type_checking_imports=True)


def strongly_connected(graph: grimp.ImportGraph) -> list[list[str]]:
    """The import graph's strongly connected components of more than one module (Tarjan's
    algorithm, without recursion): each is a set of modules that import each other round."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            module, imported = work[-1]
            for other in imported:
                if other not in index:
                    index[other] = low[other] = len(index)
                    stack.append(other)
                    on_stack.add(other)
                    work.append((other, iter(sorted(graph.find_modules_directly_imported_by(other)))))
                    break
                if other in on_stack:
                    low[module] = min(low[module], index[other])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[module])
                if low[module] == index[module]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == module:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def describe(graph: grimp.ImportGraph, component: list[str]) -> str:
    """The component's modules and one circle through its first one, with the lines that import."""
    first = component[0]
    circle = []
    for importer in sorted(graph.find_modules_that_directly_import(first)):
        if importer in component:
            chain = graph.find_shortest_chain(importer=first, imported=importer)
            circle = [*chain, first]
            break
    steps = []
    for importer, imported in zip(circle, circle[1:]):
        lines = graph.get_import_details(importer=importer, imported=imported)
        where = ", ".join(f"line {detail['line_number']}: {detail['line_contents']}" for detail in lines)
        steps.append(f"    {importer} -> {imported} ({where})")
    return f"  {len(component)} modules: {', '.join(component)}\n" + "\n".join(steps)


def test_the_strongly_connected_components_are_single_modules(graph):
    cycles = strongly_connected(graph)
    assert not cycles, "import cycles (move what both sides need into a module of its own):\n" + "\n".join(
        describe(graph, component) for component in cycles
    )


def test_the_finder_names_a_cycle_it_is_shown():
    """The check itself: a graph with a circle (and one hidden in a function) is caught."""
    made = grimp.ImportGraph()
    for module in ("p", "p.a", "p.b", "p.c", "p.d"):
        made.add_module(module)
    made.add_import(importer="p.a", imported="p.b", line_number=1, line_contents="from p import b")
    made.add_import(importer="p.b", imported="p.c", line_number=2, line_contents="from p import c")
    made.add_import(importer="p.c", imported="p.a", line_number=9, line_contents="    from p import a")
    made.add_import(importer="p.d", imported="p.a", line_number=1, line_contents="from p import a")
    assert strongly_connected(made) == [["p.a", "p.b", "p.c"]]
    assert "p.c -> p.a (line 9:     from p import a)" in describe(made, ["p.a", "p.b", "p.c"])


def test_io_sub_packages_import_only_those_below_them(graph):
    illegal = graph.find_illegal_dependencies_for_layers(layers=IO_LAYERS, containers={f"{PACKAGE}.io"})
    assert not illegal, f"rag_sft.io's order is {' > '.join(IO_LAYERS)}; these import upwards:\n" + "\n".join(
        f"  {dependency.importer} -> {dependency.imported}: "
        + "; ".join(
            " -> ".join([" | ".join(sorted(route.heads)), *route.middle, " | ".join(sorted(route.tails))])
            for route in dependency.routes
        )
        for dependency in sorted(illegal, key=lambda d: d.importer)
    )
