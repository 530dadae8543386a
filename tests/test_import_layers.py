"""Import layers: tasks call services, never the other way round, and rooms_app's services do
not import agents_app's (which import them). Read from the source (every `import`, including
those inside functions), so an import that would only run later still counts."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APPS = ("agents_app", "rooms_app", "watch_app", "dispatchportal")


@cache
def _modules() -> dict[str, Path]:
    found = {}
    for app in APPS:
        for path in (ROOT / app).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _with_parents(name: str) -> set[str]:
    """Importing `a.b.c` runs `a`, `a.b` and `a.b.c`."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


@cache
def _imports(module: str) -> frozenset[str]:
    """The project modules `module` imports, anywhere in its body."""
    path = _modules()[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    named: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            named.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            named.add(base)
            named.update(f"{base}.{alias.name}" for alias in node.names)
    return frozenset(m for name in named for m in _with_parents(name) if m in _modules() and m != module)


def _reachable(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for imported in _imports(todo.pop()):
            if imported not in seen:
                seen.add(imported)
                todo.append(imported)
    return seen


def _tasks_modules() -> list[str]:
    return [m for m in _modules() if m.rpartition(".")[2] == "tasks"]


def test_the_reader_sees_function_level_imports():
    assert "rooms_app.services" in _imports("rooms_app.tasks")
    assert "rooms_app.services" in _imports("agents_app.services")
    assert "watch_app.signals" in _imports("watch_app.apps")  # inside ready()


def test_nothing_a_task_module_imports_imports_a_task_module():
    """A task module calls services; were any of them to import a task module, even inside a
    function, the two would be an import cycle. (The services send tasks through the objects
    `AppConfig.ready()` binds: `rooms_app.services.jobs`.)"""
    assert _tasks_modules(), "no tasks modules found"
    cycles = {
        (task_module, imported): sorted(_reachable(imported) & set(_tasks_modules()))
        for task_module in _tasks_modules()
        for imported in _imports(task_module)
        if _reachable(imported) & set(_tasks_modules())
    }
    assert cycles == {}


def test_services_never_import_tasks():
    services = [m for m in _modules() if m.startswith("rooms_app.services")] + ["agents_app.services"]
    assert "rooms_app.services.jobs" in services
    reached = {m: sorted(_reachable(m) & set(_tasks_modules())) for m in services}
    assert reached == {m: [] for m in services}


def test_rooms_services_do_not_import_agents_services():
    """agents_app's services (the token path) import rooms_app's; not the other way round."""
    assert "rooms_app.services" in _reachable("agents_app.services")
    for module in (m for m in _modules() if m.startswith("rooms_app.services")):
        assert "agents_app.services" not in _reachable(module), module


def test_watch_app_is_not_imported_by_the_dispatch_path():
    """watch_app observes the dispatch tasks through Celery signals only."""
    for module in ("rooms_app.services", "rooms_app.tasks", "agents_app.services"):
        assert not {m for m in _reachable(module) if m.startswith("watch_app")}, module
