"""Package faces that import on first use (PEP 562), so importing one module stays cheap.

A package ``__init__`` names its public API twice, on purpose: under ``if TYPE_CHECKING:``
as ``from sub import Name as Name`` (what mypy and readers see) and in the mapping handed
to :func:`lazy_face` (what runs). ``tests/unit/test_faces.py`` checks that both agree.
Importing ``fleetpulse.ingest.planner`` therefore runs neither ``fleetpulse.ingest``'s
siblings nor the database driver: a name is imported when it is first read.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping

__all__ = ["lazy_face"]


def lazy_face(
    package: str, exports: Mapping[str, str]
) -> tuple[list[str], Callable[[str], object], Callable[[], list[str]]]:
    """``__all__``, ``__getattr__`` and ``__dir__`` for ``package``.

    ``exports`` maps a submodule (relative to ``package``) to the names it provides,
    separated by spaces.
    """
    where = {
        name: f"{package}.{module}" for module, names in exports.items() for name in names.split()
    }
    namespace = vars(sys.modules[package])

    def __getattr__(name: str) -> object:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value  # the next read is a plain attribute
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *where})

    # A name that is also a submodule's name (``analysis.reliability``) is bound now: once
    # that submodule is imported, the import system would bind the module over it.
    for name, module in where.items():
        if module == f"{package}.{name}":
            __getattr__(name)
    return sorted(where), __getattr__, __dir__
