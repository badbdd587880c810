"""Finding backends: the entry-point group ``polyloop.backends``, or ``module:Class``.

A backend spec is ``NAME``, ``module:Class``, either followed by ``:key=value,...``
options: ``asyncio``, ``asyncio:loop=uvloop``, ``twisted:reactor=select``,
``my_pkg.backend:MyBackend``. First-party backends load exactly like third-party ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ._backend import Backend
from ._plugins import add_detector, entry_point_targets, import_target

__all__ = ["BackendInfo", "BackendSpec", "available_backends", "load_backend"]


class BackendUnavailable(ImportError):
    """The backend exists but cannot be loaded here (its framework is missing)."""


@dataclass(frozen=True)
class BackendSpec:
    """A parsed backend spec: what to load and with which options."""

    target: str
    options: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, spec: str) -> BackendSpec:
        if not isinstance(spec, str) or not spec:
            raise TypeError(f"a backend spec must be a non-empty str, not {spec!r}")
        parts = spec.split(":")
        options: dict[str, str] = {}
        if len(parts) > 1 and "=" in parts[-1]:
            for item in parts.pop().split(","):
                key, sep, value = item.partition("=")
                if not sep or not key:
                    raise ValueError(f"bad backend option {item!r} in {spec!r} (want key=value)")
                options[key.strip()] = value.strip()
        return cls(":".join(parts), options)

    def __str__(self) -> str:
        if not self.options:
            return self.target
        return self.target + ":" + ",".join(f"{k}={v}" for k, v in self.options.items())


@dataclass(frozen=True)
class BackendInfo:
    """One entry of ``available_backends()``."""

    name: str
    target: str
    version: str | None
    error: str | None


def load_backend_class(target: str) -> type[Backend]:
    """The Backend subclass named by an entry-point name or ``module:Class``."""
    eps = entry_point_targets()
    value = eps.get(target)
    if value is None:
        if ":" not in target:
            known = ", ".join(sorted(eps)) or "none"
            raise LookupError(
                f"unknown backend {target!r}: installed backends are {known};"
                " a third-party backend can be named as module:Class"
            )
        value = target
    module_name, _, attr = value.partition(":")
    try:
        cls = import_target(value)
    except ImportError as exc:
        raise BackendUnavailable(f"backend {target!r} cannot be loaded: {exc}") from exc
    except AttributeError:
        raise BackendUnavailable(f"{module_name} has no attribute {attr!r}") from None
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise TypeError(f"{value} is not a polyloop.Backend subclass")
    try:
        cls.check_available()
    except ImportError as exc:
        raise BackendUnavailable(f"backend {target!r} cannot be loaded: {exc}") from exc
    if value == target:
        add_detector(cls)  # a module:Class backend takes part in detection once named
    return cls


def load_backend(spec: str | Backend | type[Backend], **options: Any) -> Backend:
    """A backend instance from a spec string or a class (new), or an instance (kept)."""
    if isinstance(spec, Backend):
        if options:
            raise TypeError("options cannot be given with a backend instance")
        return spec
    if isinstance(spec, type) and issubclass(spec, Backend):
        cls = spec
    else:
        parsed = BackendSpec.parse(spec)
        cls = load_backend_class(parsed.target)
        options = {**parsed.options, **options}
    unknown = sorted(set(options) - set(cls.options))
    if unknown:
        known = ", ".join(cls.options) or "none"
        raise TypeError(
            f"unknown option(s) for the {cls.name} backend: {', '.join(unknown)} (known: {known})"
        )
    return cls(**options)


def available_backends(*, composite: bool = False) -> list[BackendInfo]:
    """Every backend registered under ``polyloop.backends``, loadable or not.

    A composite backend (``mixed``: the four frameworks in one thread) runs on the
    others' sessions; it is listed only with ``composite=True``, so that "every backend"
    means every framework.
    """
    result = []
    for name, target in sorted(entry_point_targets().items()):
        try:
            cls = import_target(target)
            if getattr(cls, "composite", False) and not composite:
                continue
            cls = load_backend_class(name)
            result.append(BackendInfo(name, target, cls.framework_version(), None))
        except (ImportError, AttributeError, TypeError) as exc:
            result.append(BackendInfo(name, target, None, str(exc)))
    return result
