"""Turn ``path/to/file.py:Class`` or ``package.module:Class`` into a service class."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from .._errors import ConfigurationError
from .._service import Service

__all__ = ("load_service",)


def load_service(target: str) -> type[Service]:
    module_ref, sep, attr = target.rpartition(":")
    if not sep or not module_ref or not attr:
        raise ConfigurationError(f"expected FILE.py:Class or module:Class, got {target!r}")
    if module_ref.endswith(".py") or "/" in module_ref:
        path = Path(module_ref).resolve()
        if not path.is_file():
            raise ConfigurationError(f"no such file: {module_ref}")
        name = f"zmicro_user_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ConfigurationError(f"cannot import {module_ref}")
        module = importlib.util.module_from_spec(spec)
        sys.path.insert(0, str(path.parent))  # let the file import its neighbours
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # a user's file with an error: say where, not a traceback
            raise ConfigurationError(f"cannot load {module_ref}: {type(exc).__name__}: {exc}") from None
    else:
        try:
            module = importlib.import_module(module_ref)
        except Exception as exc:
            raise ConfigurationError(f"cannot import {module_ref}: {type(exc).__name__}: {exc}") from None
    cls = getattr(module, attr, None)
    if cls is None:
        found = sorted(
            n
            for n, v in vars(module).items()
            if isinstance(v, type) and issubclass(v, Service) and v is not Service
        )
        raise ConfigurationError(f"no {attr!r} in {module_ref} (its services: {', '.join(found) or 'none'})")
    if not (isinstance(cls, type) and issubclass(cls, Service)):
        raise ConfigurationError(f"{target}: {attr!r} is not a zmicro.Service subclass")
    return cls
