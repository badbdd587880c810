"""Installed backends: the entry-point group ``polyloop.backends``, read once.

Rule: this file knows entry points and nothing else. It imports no framework and no
other polyloop module, so that both the registry (``_registry``: specs, ``load_backend``)
and detection (``_context``: which session runs the caller) can stand on it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

__all__ = [
    "GROUP",
    "add_detector",
    "detectors",
    "entry_point_targets",
    "import_target",
    "lazy_attributes",
]

GROUP = "polyloop.backends"

_detectors: list[Any] | None = None


def entry_point_targets() -> dict[str, str]:
    """``{name: "module:attr"}`` of every installed backend."""
    return {ep.name: ep.value for ep in entry_points(group=GROUP)}


def import_target(value: str) -> Any:
    """The object named by ``module:attr`` (``ImportError``/``AttributeError`` as raised)."""
    module_name, _, attr = value.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def detectors() -> list[Any]:
    """The installed backend classes that can detect a running loop, in detection order
    (``Backend.detect_order``, then name). Read once per process: a backend class is
    meant to import without its framework, so loading them all costs little; one that
    cannot load is left out.
    """
    global _detectors
    if _detectors is None:
        found = []
        for name, value in sorted(entry_point_targets().items()):
            try:
                cls = import_target(value)
            except (ImportError, AttributeError):
                continue
            if callable(getattr(cls, "detect", None)):
                found.append((getattr(cls, "detect_order", 100), name, cls))
        _detectors = [cls for _, _, cls in sorted(found, key=lambda t: (t[0], t[1]))]
    return _detectors


def add_detector(cls: Any) -> None:
    """Take part in detection without an installed entry point (a backend named as
    ``module:Class``: ``polyloop conformance --host --backend pkg:Class``)."""
    found = detectors()
    if cls not in found:
        found.append(cls)
        found.sort(key=lambda c: getattr(c, "detect_order", 100))


def lazy_attributes(package: str, names: dict[str, str]) -> Callable[[str], Any]:
    """For a backend package that must import without its framework: a module-level
    ``__getattr__`` that imports ``names[name]`` (``"module:attr"``, the module relative
    to ``package``) on first use, and shows it as ``package.name``."""

    def __getattr__(name: str) -> Any:
        target = names.get(name)
        if target is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attr = target.partition(":")
        value = getattr(importlib.import_module(module, package), attr)
        value.__module__ = package
        return value

    return __getattr__
