"""The shape of the code: the search engine is a library that loads neither torch, MLflow nor Prefect and imports
nothing of the application; tasks/ is rooms by pipeline step with few loose modules; and no module of the project
imports another that imports it back (directly or round a longer circle, lazy imports inside functions included)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("automl", "configs", "models", "tasks", "flows", "deployments")


def test_importing_the_search_library_loads_neither_torch_mlflow_nor_prefect():
    code = "import sys, automl.tasks.search; print(sorted({'torch', 'mlflow', 'prefect'} & set(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"


def test_checking_a_config_and_its_data_loads_neither_torch_mlflow_nor_prefect():
    """``automl run`` refuses bad input, and launches the Prefect server, before paying for those imports."""
    code = (
        "import sys; from automl.configs import load_config; from automl.tasks.data_prep import load_and_check; "
        "checked = load_and_check(load_config('configs/lstm_baseline.yaml', [])); "
        "print(checked.plan.task, sorted({'torch', 'mlflow', 'prefect', 'optuna'} & set(sys.modules)))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "regression []"


def _modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            parts = parts if package == "automl" else ("automl", *parts)  # installed as automl.<package>
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports anywhere in its file (``from a.b import c`` counts as ``a.b.c``
    when that is a module, else as ``a.b``)."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names
                ]
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles: strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for child in graph[node]:
            if child not in index:
                visit(child)
                low[node] = min(low[node], low[child])
            elif child in stack:
                low[node] = min(low[node], index[child])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_search_library_imports_nothing_of_the_application():
    """tasks/search owns its types: configs, models, flows, deployments and the other tasks packages convert to them
    at their edge (tasks/space.py), never the other way round."""
    graph = import_graph()
    library = {name for name in graph if name == "automl.tasks.search" or name.startswith("automl.tasks.search.")}
    assert "automl.tasks.search._space" in library
    reached = {(name, target) for name in library for target in graph[name] if target not in library}
    assert reached == set()


# tasks/ is rooms by pipeline step; only modules every room shares, or that stand above all rooms, stay at its root.
MAX_LOOSE_TASK_MODULES = 8


def test_tasks_is_rooms_by_pipeline_step_with_few_loose_modules():
    loose = sorted(p.name for p in (ROOT / "tasks").glob("*.py"))
    rooms = sorted(p.parent.name for p in (ROOT / "tasks").glob("*/__init__.py"))
    assert len(loose) <= MAX_LOOSE_TASK_MODULES, loose
    assert {"data_prep", "warm_start", "search", "search_stage", "final_train", "registry"} <= set(rooms)


def test_no_module_imports_one_that_imports_it_back():
    graph = import_graph()
    assert "automl.tasks.search._engine" in graph and graph["automl.flows.pipeline"], "the walk found no imports"
    assert cycles(graph) == []


def test_the_walk_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_installed_the_project_claims_one_name_and_ships_every_package():
    """configs/, flows/, tasks/, models/ and deployments/ stay at the repository's top, but install as automl.<name>
    (setuptools' package-dir): site-packages gains ``automl``, not five generic names; and no folder of code is
    left out of the list (a new room would import in the repository and be missing once installed)."""
    import tomllib

    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    assert {name.split(".")[0] for name in listed} == {"automl"}
    folders = setuptools["package-dir"]
    found = {"automl"} | {
        ".".join(("automl", *init.parent.relative_to(ROOT).parts))
        for top in folders.values()
        if top != "automl"
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert listed == found
    assert {top: folders[f"automl.{top}"] for top in ("configs", "flows", "tasks", "models", "deployments")} == {
        top: top for top in ("configs", "flows", "tasks", "models", "deployments")
    }
