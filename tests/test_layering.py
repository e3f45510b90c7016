"""The packages' dependencies point one way: the rules of the README's architecture section.

Every ``import`` in ``src/handgrad`` (inside functions and ``TYPE_CHECKING`` blocks too) is
read with :mod:`ast` and reduced to an edge between units (a subpackage such as ``train``, or
a top-level module such as ``files``). The edges must respect the layers below and form no
cycle.
"""

from __future__ import annotations

import ast
import itertools
from collections import defaultdict
from pathlib import Path

import pytest

import handgrad

SOURCE = Path(handgrad.__file__).parent

# Lower layers never import higher ones. Within a layer, imports are allowed but not cycles.
LAYERS: dict[str, int] = {
    "handgrad": 0, "_compat": 0, "_lazy": 0, "files": 0, "tables": 0,  # neutral: no handgrad import
    "nn": 1, "optim": 1, "roots": 1,                          # the core library
    "check": 2, "train": 2, "landscapes": 2,                  # built on the core
    "privacy": 2,                                             # DP-SGD on nn's per-sample grads
    "plots": 3,                                               # pictures of library results
    "demo": 4, "cli": 4, "__main__": 5,                       # the command line
}  # fmt: skip
# The rules spelled out in the issue and the README, beyond the layer order.
FORBIDDEN: dict[str, set[str]] = {
    "nn": {"train", "plots", "cli", "landscapes", "check", "demo"},
    "optim": {"train", "plots", "cli", "landscapes", "check", "demo"},
    "roots": {"train", "plots", "cli", "landscapes", "check", "demo"},
    "check": {"train", "plots", "cli", "landscapes", "demo"},
    "train": {"plots", "cli", "landscapes", "check", "demo"},
    "landscapes": {"train", "plots", "cli", "check", "demo"},
    "privacy": {"train", "plots", "cli", "landscapes", "check", "demo"},
}
NEUTRAL = {unit for unit, layer in LAYERS.items() if layer == 0}


def _unit(module: str) -> str | None:
    """``handgrad.train.compare`` → ``train``; None for modules outside handgrad."""
    parts = module.split(".")
    if parts[0] != "handgrad":
        return None
    return parts[1] if len(parts) > 1 else "handgrad"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SOURCE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imported_modules(path: Path) -> list[str]:
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            # `from handgrad import nn` imports handgrad.nn: count the submodule.
            found += [f"{module}.{alias.name}" for alias in node.names] or [module]
    return found


def dependency_edges() -> dict[str, set[str]]:
    """unit → the other units it imports."""
    edges: dict[str, set[str]] = defaultdict(set)
    for path in sorted(SOURCE.rglob("*.py")):
        source = _unit(_module_name(path))
        assert source is not None
        for module in _imported_modules(path):
            target = _unit(module)
            if target is not None and target not in LAYERS:
                target = "handgrad"  # `from handgrad import __version__`: an attribute
            if target is not None and target != source:
                edges[source].add(target)
    return edges


EDGES = dependency_edges()


def test_every_unit_has_a_layer() -> None:
    units = {_unit(_module_name(path)) for path in SOURCE.rglob("*.py")}
    assert units <= set(LAYERS), f"give these a layer: {sorted(units - set(LAYERS))}"


def test_the_edges_were_read() -> None:
    """Guards the reader: edges the code is known to have must be found."""
    assert "nn" in EDGES["train"]
    assert "train" in EDGES["plots"]
    assert "files" in EDGES["train"]
    assert "landscapes" in EDGES["cli"]


@pytest.mark.parametrize("unit", sorted(LAYERS))
def test_no_unit_imports_a_higher_layer(unit: str) -> None:
    upward = sorted(t for t in EDGES.get(unit, set()) if LAYERS[t] > LAYERS[unit])
    assert not upward, f"{unit} (layer {LAYERS[unit]}) imports {upward}"


@pytest.mark.parametrize("unit", sorted(FORBIDDEN))
def test_forbidden_imports(unit: str) -> None:
    assert not EDGES.get(unit, set()) & FORBIDDEN[unit]


def test_neutral_modules_import_no_handgrad_unit() -> None:
    for unit in NEUTRAL:
        assert not EDGES.get(unit, set()), f"{unit} imports {sorted(EDGES[unit])}"


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """A cycle of ``edges`` as the units along it (first = last), or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(unit: str) -> list[str] | None:
        state[unit] = "open"
        stack.append(unit)
        for target in sorted(edges.get(unit, set())):
            if state.get(target) == "open":
                return [*stack[stack.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[unit] = "done"
        return None

    for unit in sorted(edges):
        if unit not in state and (cycle := visit(unit)):
            return cycle
    return None


def test_no_cycles_between_units() -> None:
    cycle = find_cycle(EDGES)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}}) is None


def test_within_a_layer_the_pairs_are_one_way() -> None:
    for a, b in itertools.combinations(sorted(LAYERS), 2):
        assert not (b in EDGES.get(a, set()) and a in EDGES.get(b, set())), (a, b)
