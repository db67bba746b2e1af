"""Components chosen by name: one registry mechanism and one option check for all of them.

Distillers and baselines are both classes with a ``name`` and an ``Options`` dataclass,
registered by a decorator where they are defined and created from a preset's option block.
A component's options are read-only once it is built: every ``Options`` is a frozen dataclass
(checked when the class is defined), so what ``options_dict()`` reports is what ran.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from importlib.metadata import entry_points
from typing import ClassVar

from ddlnl.errors import ConfigError


class Configurable:
    """A named component whose keyword options are checked against its ``Options`` dataclass."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "component"  # used in messages: "distiller", "baseline"
    # Options added after runs were made, with their defaults: at those defaults options_dict() (the
    # runner's stage key) leaves them out, so earlier runs keep their keys and resume instead of recomputing.
    KEY_ONLY_IF_SET: ClassVar[dict] = {}
    # Its block (methods.<name> / baselines.<name>) for each preset, by preset name, used where a preset has
    # none: how a component from another package sets itself up for smoke/quick/paper without editing
    # them. A preset with no block here either runs it at its Options defaults (a built-in component
    # without a preset block is an error instead: ExperimentSpec._own_blocks).
    preset_options: ClassVar[dict[str, dict]] = {}

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
    """Name → class, filled by :meth:`register` used as a class decorator and, for the names it
    lacks, by the entry points in ``group`` of the installed packages (a method from another
    package, imported only when it is asked for, so a broken one fails only the runs that use it)."""

    def __init__(self, kind: str, base: type, group: str):
        self.kind = kind  # used in messages: "method", "baseline"
        self.base = base  # what every registered class subclasses: Distiller, Baseline
        self.group = group  # the entry-point group, e.g. "ddlnl.distillers"
        self.classes: dict[str, type] = {}
        self._loaded: set[str] = set()  # entry points already loaded (each is loaded once)

    def register(self, cls: type) -> type:
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise TypeError(f"only a subclass of {self.base.__module__}.{self.base.__name__} can be registered "
                            f"as a {self.kind}, got {cls!r}")
        if not cls.name:
            raise TypeError(f"{cls.__name__} must set a class attribute 'name'")
        old = self.classes.get(cls.name)
        if old is not None and _where(old) != _where(cls):  # the same class again (a module run twice) is fine
            raise TypeError(f"{self.kind} name {cls.name!r} is taken by {_where(old)}: give {_where(cls)} another name")
        self.classes[cls.name] = cls
        return cls

    def __repr__(self) -> str:
        return f"<{self.kind} registry: {', '.join(self.names())}>"

    def names(self) -> list[str]:
        """The registered names and those of the installed entry points (not imported to list them)."""
        return sorted(set(self.classes) | {ep.name for ep in entry_points(group=self.group)})

    def __contains__(self, name: str) -> bool:
        if name not in self.classes:
            self._load_entry_point(name)
        return name in self.classes

    def get(self, name: str) -> type:
        """The class registered as ``name``; an unknown name raises ConfigError listing the known ones."""
        if name not in self:
            raise ConfigError(f"unknown {self.kind} {name!r}", f"use one of: {', '.join(self.names())}")
        return self.classes[name]

    def create(self, name: str, **options):
        return self.get(name)(**options)

    def _load_entry_point(self, name: str) -> None:
        for ep in entry_points(group=self.group, name=name):
            if ep.name in self._loaded:
                continue
            self._loaded.add(ep.name)
            package = ep.dist.name if getattr(ep, "dist", None) else "the package that declares it"
            what = f"{self.kind} {ep.name!r} (entry point '{ep.name} = {ep.value}' in group {self.group!r}, from {package})"
            try:
                cls = ep.load()
            except Exception as e:
                raise ConfigError(f"the {what} does not load: {type(e).__name__}: {e}",
                                  f"fix {package}, or uninstall it (pip uninstall {package})") from None
            if not (isinstance(cls, type) and issubclass(cls, self.base) and cls.name == ep.name):
                raise ConfigError(f"the {what} must name a subclass of {self.base.__module__}.{self.base.__name__} whose "
                                  f"'name' is {ep.name!r}, got {cls!r}",
                                  f"point the entry point at that class, or rename it to the class's name in {package}")
            self.register(cls)


def _where(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
