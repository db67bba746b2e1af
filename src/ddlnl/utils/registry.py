"""Components chosen by name: one registry mechanism and one option check for all of them.

Distillers and baselines are both classes with a ``name`` and an ``Options`` dataclass,
registered by a decorator where they are defined and created from a preset's option block.
A component's options are read-only once it is built: every ``Options`` is a frozen dataclass
(checked when the class is defined), so what ``options_dict()`` reports is what ran.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import ClassVar

from ddlnl.errors import ConfigError


class Configurable:
    """A named component whose keyword options are checked against its ``Options`` dataclass."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "component"  # used in messages: "distiller", "baseline"
    # Options added after runs were made, with their defaults: at those defaults options_dict() (the
    # runner's stage key) leaves them out, so earlier runs keep their keys and resume instead of recomputing.
    KEY_ONLY_IF_SET: ClassVar[dict] = {}

    @dataclass(frozen=True)
    class Options:
        pass

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        params = getattr(cls.Options, "__dataclass_params__", None)
        if params is None or not params.frozen:
            raise TypeError(f"{cls.__name__}.Options must be a frozen dataclass (@dataclass(frozen=True)): "
                            "options are read-only after construction (dataclasses.replace makes a changed copy)")

    def __init__(self, **options):
        known = {f.name for f in fields(self.Options)}
        unknown = set(options) - known
        if unknown:
            raise ConfigError(
                f"unknown option(s) for {self.kind} {self.name!r}: {', '.join(sorted(unknown))}",
                f"valid options: {', '.join(sorted(known)) or '(none)'}",
            )
        for f in fields(self.Options):
            if f.name in options:
                _check_type(f"{self.kind} {self.name!r} option {f.name}", options[f.name], f.default)
        self.options = self.Options(**options)

    def options_dict(self) -> dict:
        d = asdict(self.options)
        for name, default in self.KEY_ONLY_IF_SET.items():
            if name in d and d[name] == default:
                del d[name]
        return d


def _check_type(what: str, value, default) -> None:
    """A value from YAML must have its default's kind: bool, int, float (or int), str.

    Defaults of other kinds (None, tuples, factories) are left to the component's own checks.
    """
    if default is None or value is None or isinstance(default, (tuple, list, dict)):
        return
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif isinstance(default, str):
        ok = isinstance(value, str)
    else:
        return
    if not ok:
        kind = next(k for t, k in ((bool, "true or false"), (int, "a whole number"), (float, "a number"), (str, "a string"))
                    if isinstance(default, t))
        raise ConfigError(f"{what} must be {kind} (like its default {default!r}), got {value!r}",
                          f"set {what.rsplit(' ', 1)[-1]} to {kind}")


class Registry:
    """Name → class, filled by :meth:`register` used as a class decorator."""

    def __init__(self, kind: str):
        self.kind = kind  # used in messages: "method", "baseline"
        self.classes: dict[str, type] = {}

    def register(self, cls: type) -> type:
        if not cls.name:
            raise TypeError(f"{cls.__name__} must set a class attribute 'name'")
        self.classes[cls.name] = cls
        return cls

    def names(self) -> list[str]:
        return sorted(self.classes)

    def create(self, name: str, **options):
        if name not in self.classes:
            raise ConfigError(f"unknown {self.kind} {name!r}", f"use one of: {', '.join(self.names())}")
        return self.classes[name](**options)
