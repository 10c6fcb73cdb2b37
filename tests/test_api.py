"""The public namespace is curated: everything in ``__all__`` exists, nothing private leaks."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import zmicro
from zmicro import ConfigurationError
from zmicro.transport import require_libzmq


def test_all_is_exact() -> None:
    assert isinstance(zmicro.__all__, tuple)
    for name in zmicro.__all__:
        assert hasattr(zmicro, name), name
    # "annotations" comes from `from __future__ import annotations`; "@py_*" from pytest's rewriting
    public = {n for n in dir(zmicro) if not n.startswith(("_", "@")) and n != "annotations"}
    modules = {"cli", "demo", "discovery", "patterns", "protocol", "testing", "transport"}
    assert public - set(zmicro.__all__) - modules == set()


@pytest.mark.parametrize(
    "module",
    [m.name for m in pkgutil.walk_packages(zmicro.__path__, "zmicro.") if m.name != "zmicro.__main__"],
)
def test_every_module_declares_all(module: str) -> None:
    mod = importlib.import_module(module)
    assert isinstance(getattr(mod, "__all__", None), tuple), f"{module} lacks a tuple __all__"
    for name in mod.__all__:
        assert hasattr(mod, name), f"{module}.__all__ names missing {name}"


def test_only_transport_imports_zmq() -> None:
    import ast
    from pathlib import Path

    root = Path(zmicro.__file__).parent
    for path in root.rglob("*.py"):
        rel = path.relative_to(root).as_posix()
        if rel.startswith("transport/"):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else ([node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            )
            assert not any(n == "zmq" or n.startswith("zmq.") for n in names), f"{rel} imports zmq"
            if rel.startswith("protocol/"):
                assert "asyncio" not in names, f"{rel} imports asyncio"


def test_old_libzmq_is_refused_with_a_clear_message() -> None:
    with pytest.raises(ConfigurationError, match=r"libzmq >= 4\.3\.5.*4\.3\.4"):
        require_libzmq((4, 3, 4))
    require_libzmq((4, 3, 5))
