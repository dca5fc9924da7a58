"""The packages import in one direction: no module reaches, even lazily, back to itself."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The folders the wheel installs, each as a package of the one ``arinext`` namespace.
PACKAGES = ("arinext", "model", "service", "training")


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    if parts[0] != "arinext":
        parts = ("arinext", *parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    """Module -> project modules it imports anywhere in its body (function-level too)."""
    files = {_module_name(p): p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            found |= {t for t in targets if t in files and t != name}
        graph[name] = found
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_module_imports_itself_back() -> None:
    graph = _graph()
    assert (
        "arinext.training.synth_ood" in graph["arinext.training.synth_cli"]
    )  # the graph sees real imports
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_every_import_names_the_arinext_namespace() -> None:
    """The folders are packages of ``arinext`` only: an import of a bare ``model``, ``service`` or
    ``training`` works in a checkout (its root is on the path) but not from the wheel."""
    bare = []
    for path in sorted(REPO.glob("**/*.py")):
        if any(part.startswith(".") or part in {"build", "site"} for part in path.parts):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                roots = [node.module.split(".")[0]]
            else:
                continue
            if set(roots) & {"model", "service", "training"}:
                bare.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not bare, bare
