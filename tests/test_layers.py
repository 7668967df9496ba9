"""The layers of docs/design.md hold: every import inside src/leantrain (at a module's top or inside a
function) points to the same layer or one below, and the folders' imports have no cycle."""

import ast
from pathlib import Path

import leantrain

PACKAGE = Path(leantrain.__file__).parent
# Top to bottom (docs/design.md, "Layers"): a folder, or a top-level module without its ".py".
LAYERS = [
    ("cli",),
    ("recipes",),
    ("engine", "plan"),
    ("config",),
    ("rl", "generation"),
    ("data",),
    ("sampling", "lean", "optim", "schedules", "models", "metrics", "io"),
    ("memory", "verify"),
    ("module_names", "names", "validation", "extras", "autocast", "fp32_matmuls", "lazy"),
]
# The lazy top-level names and `python -m leantrain` reach everything; every layer may read __version__.
ENTRY_POINTS = ("__init__", "__main__")
LAYER = {unit: index for index, units in enumerate(LAYERS) for unit in units}


def unit_of(module: str) -> str:
    """"leantrain.rl.collect" -> "rl"; "leantrain.names" -> "names"; "leantrain" -> "__init__"."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports() -> set[tuple[str, str, str]]:
    """(importing unit, imported unit, file) for every leantrain import between two units."""
    found = set()
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        source = unit_of(".".join(relative.parts).removesuffix(".__init__"))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "leantrain":
                modules = [node.module] if node.module != "leantrain" else [f"leantrain.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                modules = [a.name for a in node.names if a.name.split(".")[0] == "leantrain"]
            else:
                continue
            for module in modules:
                target = unit_of(module)
                if target == "__version__":
                    target = "__init__"
                if target != source:
                    found.add((source, target, str(path.relative_to(PACKAGE))))
    return found


def test_every_unit_is_on_a_layer():
    units = {unit_of(f"leantrain.{p.relative_to(PACKAGE).with_suffix('').parts[0]}") for p in PACKAGE.rglob("*.py")}
    assert units - set(ENTRY_POINTS) == set(LAYER)


def test_imports_point_down_only():
    upward = sorted((file, source, target) for source, target, file in imports()
                    if source not in ENTRY_POINTS and target not in ENTRY_POINTS and LAYER[target] < LAYER[source])
    assert upward == []


def test_the_folders_import_no_cycle():
    edges: dict[str, set[str]] = {}
    for source, target, _ in imports():
        if source not in ENTRY_POINTS and target not in ENTRY_POINTS:
            edges.setdefault(source, set()).add(target)
    state: dict[str, str] = {}

    def visit(unit: str, path: list[str]) -> list[str] | None:
        state[unit] = "open"
        for target in sorted(edges.get(unit, ())):
            if state.get(target) == "open":
                return [*path, unit, target]
            if target not in state and (cycle := visit(target, [*path, unit])):
                return cycle
        state[unit] = "done"
        return None

    cycles = [cycle for unit in sorted(edges) if unit not in state and (cycle := visit(unit, []))]
    assert cycles == []
