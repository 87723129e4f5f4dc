"""The registry of methods: a name to a :class:`~selfsup.methods.base.Method` class, and what works by name.

The package's face (:mod:`selfsup.methods`) registers every method, one line each.
"""

from __future__ import annotations

from dataclasses import replace

from ..config import Config, MethodConfig
from ..errors import ConfigError
from .base import Method
from .settings import declared, resolve_values

#: name -> method class
METHODS: dict[str, type[Method]] = {}


def register_method(name: str, cls: type[Method]) -> type[Method]:
    """Add a method to :data:`METHODS` under ``name`` (its ``method.name``)."""
    if name in METHODS and METHODS[name] is not cls:
        raise ValueError(f"method {name!r} is already registered")
    METHODS[name] = cls
    return cls


def method_class(name: str) -> type[Method]:
    """The registered class for ``name``; :class:`ConfigError` if unknown."""
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r} (method.name); known: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def build_method(cfg: Config, num_classes: int) -> Method:
    """Instantiate ``cfg.method.name`` from the config."""
    return method_class(cfg.method.name).from_config(cfg, num_classes)


def setting_names(but: str | None = None) -> set[str]:
    """The ``method.*`` keys that the registered methods declare (every method's, or all but ``but``'s)."""
    return {k for name, c in METHODS.items() if name != but for k in declared(c.Settings)}


def resolve_method(cfg: Config) -> Config:
    """``cfg`` with the method section its method declares: every setting, given or default, checked.

    Keys that only other methods declare are dropped (a recipe shared by several methods;
    a config saved when every method's keys were saved together).

    Raises:
        ConfigError: For an unknown method, a key no method declares, or a bad value.
    """
    cls = method_class(cfg.method.name)
    values = resolve_values(cls.Settings, cfg.method.values, cfg.method.name, setting_names(but=cfg.method.name))
    return replace(cfg, method=MethodConfig(cfg.method.name, values))


def semi_supervised_methods() -> list[str]:
    """The methods ``selfsup semi`` trains: those that read labels (few-label methods and the baseline)."""
    return sorted(n for n, c in METHODS.items() if c.uses_labels)
