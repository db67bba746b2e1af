"""YAML reading for presets, studies and ``--set`` values: safe (no code runs), floats as YAML 1.2 reads them.

PyYAML follows YAML 1.1, where a float needs a dot, so ``1e-4`` would load as the *string*
"1e-4" and a learning rate written the way everyone writes it would be rejected. This loader
adds YAML 1.2's float rule (``1e-4``, ``5E3``, ``.5``, ``-2.5e+3``) and is otherwise
``yaml.SafeLoader``.
"""

from __future__ import annotations

import re

import yaml


class _Loader(yaml.SafeLoader):
    pass


_FLOAT_12 = re.compile(r"""^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$""")
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789."))
# integers keep PyYAML's int resolver, which is tried first for plain digits
_Loader.yaml_implicit_resolvers = {
    k: sorted(v, key=lambda tag_re: tag_re[0] != "tag:yaml.org,2002:int") for k, v in _Loader.yaml_implicit_resolvers.items()}


def load_yaml(text: str):
    """Parse YAML text safely (``yaml.SafeLoader`` plus YAML 1.2 floats); raises ``yaml.YAMLError``."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
