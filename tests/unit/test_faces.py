"""Package faces: lazy, complete, the same names for mypy and at run time, and cheap.

Each package ``__init__`` lists its names twice (under ``TYPE_CHECKING`` and for
:func:`fleetpulse._lazy.lazy_face`); these tests hold the two lists together and keep
importing a face, or the pure planner, from loading the database, broker or web stacks.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest

FACES = ["fleetpulse.agent", "fleetpulse.analysis", "fleetpulse.api", "fleetpulse.ingest"]
FACES += ["fleetpulse.store"]
HEAVY = ["aiormq", "alembic", "httpx", "litestar", "numpy", "polars", "psycopg", "sqlalchemy"]


def type_checking_names(package: str) -> dict[str, str]:
    """``name -> module`` as imported under ``if TYPE_CHECKING:`` in the package's __init__."""
    module = importlib.import_module(package)
    tree = ast.parse(Path(str(module.__file__)).read_text())
    block = next(
        n for n in tree.body if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING"
    )
    names: dict[str, str] = {}
    for node in block.body:
        assert isinstance(node, ast.ImportFrom), ast.unparse(node)
        for alias in node.names:
            assert alias.asname == alias.name, f"{package}: {alias.name} is re-exported as itself"
            names[alias.name] = str(node.module)
    return names


@pytest.mark.parametrize("package", FACES)
def test_the_typed_and_the_lazy_names_agree_and_all_resolve(package: str) -> None:
    face = importlib.import_module(package)
    typed = type_checking_names(package)
    assert sorted(face.__all__) == sorted(set(face.__all__)) == sorted(typed)
    assert set(face.__all__) <= set(dir(face))
    for name, module in typed.items():
        value = getattr(face, name)
        assert value is getattr(importlib.import_module(module), name), name
        if isinstance(value, type) or inspect.isfunction(value):
            assert value.__module__.startswith(f"{package}."), name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        face.nope  # noqa: B018


def loaded_after(statement: str) -> list[str]:
    probe = f"import sys, json; {statement}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True)
    modules = json.loads(out.stdout)
    return [heavy for heavy in HEAVY if heavy in modules]


# fleetpulse.analysis binds ``reliability`` (function and submodule) at once, so it loads polars.
@pytest.mark.parametrize("package", [face for face in FACES if face != "fleetpulse.analysis"])
def test_importing_a_face_loads_no_heavy_dependency(package: str) -> None:
    assert loaded_after(f"import {package}") == []


def test_the_pure_planner_loads_no_driver_broker_migrations_or_numpy() -> None:
    assert loaded_after("import fleetpulse.ingest.planner") == []


def test_migrations_are_loaded_only_when_the_schema_is_touched() -> None:
    assert "alembic" not in loaded_after("import fleetpulse.api.app, fleetpulse.ingest.service")
    assert "alembic" in loaded_after("from fleetpulse.store import upgrade")
