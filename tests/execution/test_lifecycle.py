"""execution.lifecycle is the only code that writes an instance's status, lease and
dispatch columns; everything else asks it."""

import ast
import re
from pathlib import Path

import pytest

import execution

LIFECYCLE_COLUMNS = (
    "status",
    "status_before_pause",
    "paused_reason",
    "lease_owner",
    "lease_expires_at",
    "generation",
    "next_run_at",
    "dispatched_at",
)
# Steps and code versions have a status of their own; those are written where they are.
ALWAYS_INSTANCE = tuple(c for c in LIFECYCLE_COLUMNS if c != "status")
WRITING_CALLS = {"update", "create", "get_or_create", "update_or_create", "Instance"}
# `status = ANY(...)` compares (a WHERE clause); it never sets.
SQL_WRITE = re.compile(
    r"\b(" + "|".join(LIFECYCLE_COLUMNS) + r")\s*=\s*(?!ANY\s*\()(%|NULL|'|\$|[a-z_]+\s*[+(])",
    re.I,
)
PACKAGE = Path(execution.__file__).parent


def root_name(node: ast.AST) -> str:
    """The name a chain of calls and attributes starts from (`Instance` in
    Instance.objects.filter(...).update)."""
    while isinstance(node, ast.Attribute | ast.Call | ast.Subscript):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else ""


def about_instances(node: ast.AST) -> bool:
    return "instance" in root_name(node).lower() or "instances" in ast.unparse(node).lower()


def writes_in(source: str) -> list[str]:
    """Where the source writes a lifecycle column: keyword arguments of an ORM write,
    assignments to an instance's attribute, update_fields, and SQL text that sets one."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            for keyword in node.keywords:
                if name in WRITING_CALLS and keyword.arg in ALWAYS_INSTANCE:
                    found.append(f"line {node.lineno}: {name}({keyword.arg}=...)")
                elif name in WRITING_CALLS and keyword.arg == "status" and about_instances(func):
                    found.append(f"line {node.lineno}: {name}(status=...)")
                elif keyword.arg == "update_fields" and about_instances(func):
                    named = {
                        c.value for c in ast.walk(keyword.value) if isinstance(c, ast.Constant)
                    }
                    for column in named & set(LIFECYCLE_COLUMNS):
                        found.append(f"line {node.lineno}: update_fields {column}")
        elif isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for item in ast.walk(target):
                    if (
                        isinstance(item, ast.Attribute)
                        and item.attr in LIFECYCLE_COLUMNS
                        and (item.attr in ALWAYS_INSTANCE or about_instances(item.value))
                    ):
                        found.append(f"line {node.lineno}: {ast.unparse(item)} = ...")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            for match in SQL_WRITE.finditer(node.value):
                found.append(f"line {node.lineno}: SQL {match.group(0)!r}")
    return found


def test_the_check_finds_each_kind_of_write():
    source = """
Instance.objects.filter(pk=1).update(next_run_at=None)
instances.update(status="paused")
instance.lease_owner = ""
instance.save(update_fields=["dispatched_at"])
SQL = "UPDATE execution_instance SET dispatched_at = NULL WHERE id = %s"
"""
    assert len(writes_in(source)) == 5
    # A step's status, an Activation's generation and a read are not writes.
    harmless = """
step.status = "complete"
Step.objects.filter(pk=1).update(status="complete")
Activation(generation=instance.generation)
Instance.objects.filter(status__in=ACTIVE, lease_owner="")
"""
    assert writes_in(harmless) == []


@pytest.mark.parametrize(
    "path",
    sorted(
        p
        for p in PACKAGE.rglob("*.py")
        if not {"lifecycle", "migrations"} & set(p.relative_to(PACKAGE).parts)
    ),
    ids=lambda p: str(p.relative_to(PACKAGE)),
)
def test_only_the_lifecycle_writes_status_lease_and_dispatch_columns(path):
    assert writes_in(path.read_text()) == [], f"{path} writes lifecycle columns outside lifecycle"


def test_the_lifecycle_itself_is_seen_writing_them():
    # So that the check above cannot pass by seeing nothing.
    lifecycle = PACKAGE / "lifecycle"
    assert all(writes_in((lifecycle / name).read_text()) for name in ("leases.py", "due.py"))


def engine_modules() -> dict[str, set[str]]:
    """Each module of the engine (the sandbox aside) and the engine modules it imports."""
    imports = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[0] in ("sandbox", "migrations"):
            continue
        name = ".".join(("execution", *parts)).removesuffix(".__init__")
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("execution"):
                found |= {f"{node.module}.{a.name}" for a in node.names} | {node.module}
        imports[name] = found
    return {name: found & set(imports) - {name} for name, found in imports.items()}


def test_the_engine_imports_in_one_direction_without_a_circle():
    imports = engine_modules()
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"an import circle: {' -> '.join((*path, name))}"
        if name not in done:
            for imported in imports[name]:
                visit(imported, (*path, name))
            done.add(name)

    for name in imports:
        visit(name, ())
    assert "execution.lifecycle.due" in imports["execution.lifecycle.states"]  # it saw them


@pytest.mark.parametrize("name", sorted(engine_modules()))
def test_no_engine_module_imports_inside_a_function(name):
    path = PACKAGE.joinpath(*name.split(".")[1:])
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name != "ready":
            inner = [n for n in ast.walk(node) if isinstance(n, ast.Import | ast.ImportFrom)]
            assert not inner, f"{name}.{node.name} imports inside itself"
