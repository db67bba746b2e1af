"""Networks used by the distillers and evaluators, selected by name.

Each model file registers its class with ``@register_model("name")``; importing this
package imports every model file, so :func:`list_models` is complete. A registered class
takes ``num_classes`` positionally and keyword-only options (``image_size``,
``in_channels`` and its own, e.g. ``width``); :func:`create_model` checks names and
options up front so a typo in a preset fails with the valid choices listed.

Adding a model: write ``models/<family>.py`` with a class whose ``__init__`` is
``(self, num_classes, *, image_size=32, in_channels=3, ...)``, that has ``forward``
(logits), ``embed`` (features before the classifier) and ``feature_dim``; decorate it with
``@register_model("<name>")`` and import the file at the bottom of this module.
"""

from __future__ import annotations

import inspect
from typing import Callable, TypeVar

from torch import nn

from ddlnl.errors import ConfigError, check_choice

_REGISTRY: dict[str, type[nn.Module]] = {}
_COMMON = ("image_size", "in_channels")

M = TypeVar("M", bound=type[nn.Module])


def register_model(name: str) -> Callable[[M], M]:
    """Class decorator: make ``name`` available to :func:`create_model`."""

    def wrap(cls: M) -> M:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"model name {name!r} is registered twice")
        _REGISTRY[name] = cls
        return cls

    return wrap


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_REGISTRY)


def model_options(name: str) -> list[str]:
    """Keyword options ``name`` accepts besides ``num_classes`` (for help texts and errors)."""
    cls = _REGISTRY[check_choice("model", name, _REGISTRY)]
    params = inspect.signature(cls.__init__).parameters
    return [p for p, v in params.items() if v.kind is inspect.Parameter.KEYWORD_ONLY]


def create_model(
    name: str, num_classes: int, *, image_size: int = 32, in_channels: int = 3, **kwargs
) -> nn.Module:
    """Build the registered model ``name``; unknown names or options raise ConfigError."""
    check_choice("model", name, _REGISTRY)
    valid = model_options(name)
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ConfigError(
            f"model {name!r} has no option(s) {', '.join(map(repr, unknown))}",
            f"use some of: {', '.join(valid)}",
        )
    check_positive_int("num_classes", num_classes)
    check_positive_int("image_size", image_size)
    check_positive_int("in_channels", in_channels)
    return _REGISTRY[name](num_classes, image_size=image_size, in_channels=in_channels, **kwargs)


def model_spec(spec) -> dict | None:
    """A model name or mapping (as presets write them) as a mapping; None for null/off."""
    if spec in (None, False, "", "null", "none"):
        return None
    return {"name": spec} if isinstance(spec, str) else dict(spec)


def check_positive_int(what: str, value) -> None:
    """Raise ConfigError unless ``value`` is an int >= 1 (shared by the model files)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{what} must be a positive integer, got {value!r}", f"set {what} >= 1")


# Imported last: the model files need ``register_model`` defined above.
from ddlnl.models import convnet, rcig, resnet  # noqa: E402,F401
