"""The package's structure, read from the source: cli.py and packages only at the top, layers
without upward imports or cycles, package __init__ files that map their modules and import
nothing, modules a reader can take in at once, and W&B reached only through convlens.tracking's
interface."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parents[1] / "lib"
PACKAGE = LIB / "convlens"

# Lowest first; a module may import from its own layer or below, never above.
LAYERS = [
    ["base"],  # dependency-free (base.progress: tqdm only)
    ["specs"],  # job schemas: pydantic and YAML only
    ["data", "models", "storage", "testing", "tracking", "raycluster"],  # each concern's own package
    ["training", "analysis"],
    ["sweep", "launch", "report", "bench", "jobs"],
    ["cli"],  # the one module at the top: pyproject's entry point names convlens.cli
]
TOP_MODULES = {"__init__.py", "cli.py"}
MAX_LINES = 300
TRACKING = "convlens.tracking"
# All that the rest of the package may import from convlens.tracking (its __init__ lists them).
TRACKING_INTERFACE = {
    "convlens.tracking.tracker": {"open_tracker", "open_driver", "close_run", "wandb_run_id"},
    "convlens.tracking.run": {"tracking_mode"},
    "convlens.tracking.jobs": {"open_linked_runs", "open_sweep_run", "close_job", "log_probe", "log_sweep"},
    "convlens.tracking.media": {"log_analysis"},
    "convlens.tracking.sync": {"sync"},
}


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


def test_the_top_holds_cli_and_packages_only():
    """Every concern has its package; a loose module beside them would be a second place for one."""
    loose = sorted(p.name for p in PACKAGE.glob("*.py") if p.name not in TOP_MODULES)
    assert not loose, f"give each a package: {loose}"


def test_package_inits_map_their_modules():
    """Each package's __init__ opens with a docstring naming every module of it (what it holds)."""
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        missing = [p.name for p in sorted(init.parent.glob("*.py")) if p.name != "__init__.py" and p.name not in doc]
        assert doc and not missing, f"{init.relative_to(LIB)}: its docstring names no {missing}"


@pytest.mark.parametrize("name", sorted(modules()))
def test_module_fits_a_page(name):
    lines = len(modules()[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name}: {lines} lines; split it by concern"


def in_tracking(module: str) -> bool:
    return module == TRACKING or module.startswith(TRACKING + ".")


def is_wandb(name) -> bool:
    return isinstance(name, str) and (name == "wandb" or name.startswith("wandb."))


def wandb_uses(source: str) -> list[tuple[int, bool]]:
    """(line, inside a function) of every way a source reaches wandb or a submodule of it:
    import statements, importlib.import_module / __import__ / find_spec, and `python -m wandb`."""
    found = []

    def visit(node, in_function):
        uses = False
        if isinstance(node, ast.Import):
            uses = any(is_wandb(a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            uses = node.level == 0 and is_wandb(node.module)
        elif isinstance(node, ast.Call):
            func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            uses = (func in ("import_module", "__import__", "find_spec") and bool(node.args)
                    and isinstance(node.args[0], ast.Constant) and is_wandb(node.args[0].value))
        elif isinstance(node, (ast.List, ast.Tuple)):
            items = [e.value if isinstance(e, ast.Constant) else None for e in node.elts]
            uses = any(a == "-m" and is_wandb(b) for a, b in zip(items, items[1:]))
        if uses:
            found.append((node.lineno, in_function))
        inner = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(ast.parse(source), False)
    return found


@pytest.mark.parametrize("source, uses", [
    ("import wandb", 1), ("import wandb.sdk as sdk", 1), ("from wandb.proto import wandb_internal_pb2", 1),
    ("from wandb import Image", 1), ("importlib.import_module('wandb.apis')", 1), ("__import__('wandb')", 1),
    ("subprocess.run([sys.executable, '-m', 'wandb', 'sync', path])", 1),
    ("import wandbx", 0), ("from . import wandb", 0), ("WANDB = 'wandb'  # a folder name", 0)])
def test_wandb_uses_finds_every_way_in(source, uses):
    assert len(wandb_uses(source)) == uses


def test_only_convlens_tracking_reaches_wandb():
    """No module outside convlens.tracking imports wandb or any part of it, or runs it."""
    outside = [f"{m}: line {line}" for m, path in modules().items() if not in_tracking(m)
               for line, _ in wandb_uses(path.read_text())]
    assert not outside, "W&B belongs in convlens.tracking:\n" + "\n".join(outside)
    assert any(wandb_uses(p.read_text()) for m, p in modules().items() if in_tracking(m))


def test_tracking_imports_wandb_only_inside_functions():
    """Importing convlens.tracking.* never loads wandb (seconds at start-up): only a call that
    logs does."""
    eager = [f"{m}: line {line}" for m, path in modules().items() if in_tracking(m)
             for line, lazy in wandb_uses(path.read_text()) if not lazy]
    assert not eager, "\n".join(eager)


def test_the_rest_reaches_tracking_through_its_interface():
    """Outside convlens.tracking, imports from it name functions of TRACKING_INTERFACE, never a
    module of it (e.g. `from convlens.tracking import run`) nor its internals (open_run, ...)."""
    bad = []
    for m, path in modules().items():
        if in_tracking(m):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                bad += [f"{m}: import {a.name}" for a in node.names if in_tracking(a.name)]
            elif isinstance(node, ast.ImportFrom) and node.module and (
                    in_tracking(node.module) or node.module == "convlens"):
                allowed = TRACKING_INTERFACE.get(node.module, set())
                bad += [f"{m}: from {node.module} import {a.name}" for a in node.names
                        if a.name not in allowed and (node.module != "convlens" or a.name == "tracking")]
    assert not bad, "\n".join(bad)


def test_tracking_init_maps_its_modules_and_interface():
    """The package's docstring names each of its modules and each function of the interface."""
    mods = modules()
    doc = ast.get_docstring(ast.parse(mods[TRACKING].read_text()))
    names = [f"{m.rsplit('.', 1)[1]}.py" for m in mods if m.startswith(TRACKING + ".")]
    names += [f"{module.rsplit('.', 1)[1]}.{fn}" for module, fns in TRACKING_INTERFACE.items() for fn in fns]
    assert not [n for n in names if n not in doc], doc
    for module, fns in TRACKING_INTERFACE.items():
        defined = {n.name for n in ast.parse(mods[module].read_text()).body if isinstance(n, ast.FunctionDef)}
        assert fns <= defined, f"{module} lacks {fns - defined}"
