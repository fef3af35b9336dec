"""The package's structure, read from the source: layers without upward imports or cycles,
package __init__ files that import nothing, and modules a reader can take in at once."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parents[1] / "lib"
PACKAGE = LIB / "convlens"

# Lowest first; a module may import from its own layer or below, never above.
LAYERS = [
    ["errors", "files", "progress"],  # dependency-free (progress: tqdm only)
    ["specs"],  # job schemas: pydantic and YAML only
    ["data", "models", "checkpoint", "rundir", "restore", "faults", "tracking", "wandb_tracker", "wandb_run",
     "wandb_jobs", "sync", "raycluster",
     "knn"],
    ["training", "analysis", "probes"],
    ["sweep", "launch", "report", "bench", "demo", "dispatch"],
    ["cli"],
]
MAX_LINES = 300


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(LIB).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def layer_of(module: str) -> int:
    top = module.split(".")[1] if module.count(".") else ""
    for level, names in enumerate(LAYERS):
        if top in names:
            return level
    raise AssertionError(f"{module}: in no layer of tests/test_layers.py; give it one")


def imports(path: Path, known: set[str]) -> set[str]:
    """convlens modules a file imports, at any depth of the file (function-level imports too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("convlens")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("convlens"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
    return {m for m in found if m in known and m != "convlens"}


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports(path, set(mods)) for name, path in mods.items()}


def test_every_import_goes_down_or_sideways():
    upward = [f"{m} (layer {layer_of(m)}) imports {d} (layer {layer_of(d)})"
              for m, deps in graph().items() if m != "convlens" for d in sorted(deps)
              if "." in d and layer_of(d) > layer_of(m)]
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    g = graph()
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for dep in sorted(g[node]):
            if state.get(dep) == "open":
                cycles.append(" -> ".join(stack[stack.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = "done"

    for node in sorted(g):
        if node not in state:
            visit(node, [node])
    assert not cycles, "\n".join(cycles)


def test_package_inits_import_nothing():
    """Importing convlens.x.y runs convlens/x/__init__.py: empty inits add no hidden edges."""
    for name, path in modules().items():
        if path.name == "__init__.py":
            body = ast.parse(path.read_text()).body
            assert all(isinstance(n, (ast.Expr, ast.Assign)) and isinstance(n.value, ast.Constant)
                       for n in body), name


@pytest.mark.parametrize("name", sorted(modules()))
def test_module_fits_a_page(name):
    lines = len(modules()[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name}: {lines} lines; split it by concern"
