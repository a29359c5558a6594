"""Backend registries: one file per backend, each registering itself by name.

A :class:`Registry` collects the backends of one kind (capture source,
preprocessor, inference engine, divert link). The backends of the package that
owns the registry register themselves when the package's modules are imported
(``@REGISTRY.register("name")``); backends that live higher up (the simulator's
capture source in tools/sim) are declared as entry points of the group named
by the registry, so the runtime looks them up by name without importing them.
The config's choices are :meth:`Registry.names`.

Imports nothing of the project.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any


class Registry:
    """Backends of one kind by name.

    ``package``: the package whose modules hold the built-in backends (all of its
    modules are imported on first use); ``group``: the entry-point group of
    backends registered from other folders.
    """

    def __init__(self, kind: str, package: str, group: str | None = None):
        self.kind = kind
        self.package = package
        self.group = group
        self._items: dict[str, Any] = {}
        self._discovered = False

    def register(self, name: str) -> Callable[[Any], Any]:
        """Class or factory decorator: ``@REGISTRY.register("opencv")``."""
        def add(obj):
            self._items[name] = obj
            return obj
        return add

    def _plugins(self) -> dict:
        if self.group is None:
            return {}
        return {ep.name: ep for ep in entry_points(group=self.group)}

    def discover(self) -> None:
        """Import every module of the owning package, so its backends register themselves."""
        if self._discovered:
            return
        self._discovered = True
        pkg = importlib.import_module(self.package)
        for mod in pkgutil.iter_modules(pkg.__path__):
            importlib.import_module(f"{self.package}.{mod.name}")

    def names(self) -> tuple[str, ...]:
        """Every selectable name: the built-in ones (in the order their modules register), then plugins."""
        self.discover()
        names = list(self._items)
        names += [n for n in self._plugins() if n not in names]
        return tuple(names)

    def get(self, name: str) -> Any:
        """The backend registered as ``name``; KeyError naming the choices when there is none."""
        self.discover()
        if name not in self._items:
            ep = self._plugins().get(name)
            if ep is not None:
                obj = ep.load()  # the plugin module registers itself; its entry point names the backend
                self._items.setdefault(name, obj)
        if name not in self._items:
            raise KeyError(f"unknown {self.kind} {name!r}; choose one of {list(self.names())}")
        return self._items[name]
