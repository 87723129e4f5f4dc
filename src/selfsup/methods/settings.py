"""A method's own settings: read from the config's ``method`` section, typed and checked.

Each method declares its settings as a dataclass of :func:`selfsup.config.setting`
fields beside its code (``Method.Settings``). The ``method`` section keeps what a recipe
or flags gave; :func:`settings_from` turns that into the method's dataclass, and
:func:`resolve_values` into what a saved config holds: every setting of the chosen
method, with its default where none was given.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from ..config import check_fields, coerce, type_hints
from ..errors import ConfigError


def declared(settings_cls: type | None) -> list[str]:
    """The names of a method's settings (none for a method without settings)."""
    return [] if settings_cls is None else [f.name for f in dataclasses.fields(settings_cls)]


def settings_from(settings_cls: type | None, values: Mapping[str, Any]) -> Any:
    """The method's settings dataclass from the section's ``values``; keys it does not declare are ignored.

    Raises:
        ConfigError: For a value of the wrong type or out of its range (naming ``method.KEY``).
    """
    if settings_cls is None:
        return None
    hints = type_hints(settings_cls)
    out = settings_cls(**{k: coerce(v, hints[k], f"method.{k}") for k, v in values.items() if k in hints})
    check_fields(out, "method")
    return out


def resolve_values(
    settings_cls: type | None, values: Mapping[str, Any], method: str, elsewhere: Iterable[str]
) -> dict[str, Any]:
    """Every setting of ``method`` (given or default), checked; keys only other methods have are dropped.

    A recipe shared by several methods (a sweep over ``method.name``) and a config saved
    when every method's keys were saved together both carry keys of other methods: they
    change nothing here. A key that no method declares is a mistake.

    Args:
        settings_cls: The method's settings dataclass (None: it has none).
        values: The ``method`` section's keys other than ``name``.
        method: The method's name (for messages).
        elsewhere: The settings of every other registered method.

    Raises:
        ConfigError: For a key no method declares (with the nearest of this method's), or a bad value.
    """
    own, others = declared(settings_cls), set(elsewhere)
    for key in values:
        if key not in own and key not in others:
            close = difflib.get_close_matches(key, own, n=1)
            hint = f"; did you mean 'method.{close[0]}'?" if close else ""
            raise ConfigError(
                f"method.{key} is not a setting of {method} nor of any other method{hint} "
                f"({method}'s settings: {', '.join(own) or 'none'})"
            )
    settings = settings_from(settings_cls, values)
    return {} if settings is None else dataclasses.asdict(settings)
