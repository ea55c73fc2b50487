"""The package layers of docs/architecture.md, and a checker that reads imports from the source.

The checker parses every module with ``ast`` (nothing is imported or run), folds modules into
packages (``cloud.devices.models`` -> ``cloud.devices``; ``firmware.core.contract`` ->
``firmware.core``), and reports:

* every cycle between packages (a strongly connected component of more than one package),
  with one importing module for each edge of it;
* every import that goes up a layer, or into a package a layer forbids (Flask below the HTTP
  layer).

Imports inside ``if TYPE_CHECKING:`` count too: an annotation that needs a package above is as
much a tangle for a reader as a runtime import.
"""

from __future__ import annotations

import ast
import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOP_PACKAGES = ("cloud", "broker", "firmware", "parameters")

# Bottom to top. A package may import packages of lower layers, and of its own layer without a
# cycle; in an ORDERED layer only those listed before it (the domains: docs/architecture.md).
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("device contract", ("firmware.core", "parameters")),
    (
        "firmware",
        (
            "firmware.hal",
            "firmware.master",
            "firmware.slave",
            "firmware.host",
            "firmware.tools",
            "firmware.main",
            "firmware",
        ),
    ),
    (
        "infrastructure",
        ("cloud", "cloud.settings", "cloud.files", "cloud.db", "cloud.mail", "cloud.devicelink"),
    ),
    (
        "domains",
        (
            "cloud.organizations",
            "cloud.devices",
            "cloud.identity",
            "cloud.audit",
            "cloud.pki",
            "cloud.telemetry",
            "cloud.billing",
            "cloud.commands",
            "cloud.configuration",
            "cloud.access",
            "cloud.pairing",
            "cloud.charging",
            "cloud.ingest",
            "cloud.ocpp",
            "cloud.manufacturing",
            "cloud.models",
            "cloud.migrations",
        ),
    ),
    ("broker adapters", ("broker",)),
    ("HTTP", ("cloud.api",)),
    ("entry points", ("cloud.app", "cloud.cli")),
)

ORDERED = ("domains",)

# Third-party packages only the HTTP layer and the entry points may import; and the two pieces of
# infrastructure that are Flask extensions (``init_app``: the request's database session, the
# app's mailer) — the domains below never reach them through Flask.
WEB_ONLY = ("flask", "flask_smorest", "werkzeug", "marshmallow", "webargs")
WEB_LAYERS = ("HTTP", "entry points")
FLASK_EXTENSIONS = ("cloud.db", "cloud.mail")


@dataclasses.dataclass(frozen=True)
class Edge:
    """``source`` imports ``target``; ``where`` is one module that does it."""

    source: str
    target: str
    where: str


def package_of(module: str) -> str:
    """The package a module belongs to for the layer rules."""
    parts = module.split(".")
    if parts[0] in ("cloud", "firmware") and len(parts) > 1:
        return ".".join(parts[:2])
    return parts[0]


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(tree: ast.AST, module: str, is_package: bool) -> Iterable[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                base = node.module
            else:
                here = module.split(".") if is_package else module.split(".")[:-1]
                here = here[: len(here) - (node.level - 1)]
                base = ".".join(here + ([node.module] if node.module else []))
            yield base
            # ``from cloud import settings`` imports the module cloud.settings.
            yield from (f"{base}.{alias.name}" for alias in node.names)


@dataclasses.dataclass(frozen=True)
class Source:
    """What the checker read: every module, and (importing module, imported name) pairs."""

    modules: frozenset[str]
    imports: tuple[tuple[str, str], ...]


def read_imports(root: Path = ROOT, tops: Iterable[str] = TOP_PACKAGES) -> Source:
    """Every module under the top packages and every import they make."""
    modules: set[str] = set()
    found: list[tuple[str, str]] = []
    for top in tops:
        for path in sorted((root / top).rglob("*.py")):
            module = _module_name(path, root)
            modules.add(module)
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            for name in _imports(tree, module, path.name == "__init__.py"):
                found.append((module, name))
    return Source(frozenset(modules), tuple(found))


def package_edges(
    source: Source, known: Iterable[str] = TOP_PACKAGES
) -> dict[tuple[str, str], Edge]:
    """Package-level edges between this project's packages (first importing module kept)."""
    tops = set(known)
    packages = {package_of(m) for m in source.modules}
    edges: dict[tuple[str, str], Edge] = {}
    for module, name in source.imports:
        if name.split(".")[0] not in tops:
            continue
        target = package_of(name)
        if target not in packages:  # ``from cloud import __version__``: a name, not a module
            target = package_of(name.rsplit(".", 1)[0])
        source = package_of(module)
        if target != source and target in packages:
            edges.setdefault((source, target), Edge(source, target, module))
    return edges


def cycles(edges: Mapping[tuple[str, str], Edge]) -> list[list[str]]:
    """Strongly connected components of more than one package (Tarjan, iterative)."""
    graph: dict[str, list[str]] = defaultdict(list)
    for source, target in edges:
        graph[source].append(target)
        graph.setdefault(target, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
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


def describe_cycle(component: list[str], edges: Mapping[tuple[str, str], Edge]) -> str:
    """The edges inside a cycle, each with a module that makes it."""
    inside = set(component)
    lines = [
        f"  {e.source} -> {e.target} (in {e.where})"
        for (s, t), e in sorted(edges.items())
        if s in inside and t in inside
    ]
    return "cycle between " + ", ".join(component) + ":\n" + "\n".join(lines)


def layer_of(package: str) -> int | None:
    """The index of the package's layer in LAYERS (None: not placed, itself an error)."""
    for number, (_name, members) in enumerate(LAYERS):
        if package in members:
            return number
    return None


def layer_violations(edges: Mapping[tuple[str, str], Edge], source: Source) -> list[str]:
    """Imports that go up a layer, packages no layer names, and web imports below the HTTP
    layer."""
    problems: list[str] = []
    for edge in edges.values():
        low, high = layer_of(edge.source), layer_of(edge.target)
        if low is None or high is None:
            unplaced = edge.source if low is None else edge.target
            problems.append(f"{unplaced} is in no layer of tests/layers.py LAYERS")
        elif high > low:
            problems.append(
                f"{edge.source} ({LAYERS[low][0]}) imports {edge.target} "
                f"({LAYERS[high][0]}, above it) in {edge.where}"
            )
        elif high == low and LAYERS[low][0] in ORDERED:
            order = LAYERS[low][1]
            if order.index(edge.target) > order.index(edge.source):
                problems.append(
                    f"{edge.source} imports {edge.target}, a {LAYERS[low][0]} package listed "
                    f"after it, in {edge.where}"
                )
    web_floor = min(n for n, (name, _m) in enumerate(LAYERS) if name in WEB_LAYERS)
    for module, name in source.imports:
        package = package_of(module)
        layer = layer_of(package)
        if package in FLASK_EXTENSIONS or layer is None or layer >= web_floor:
            continue
        if name.split(".")[0] in WEB_ONLY:
            problems.append(f"{module} imports {name}: only the HTTP layer may use the web stack")
    return sorted(set(problems))
