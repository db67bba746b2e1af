"""YAML reading for presets, studies and ``--set`` values: safe (no code runs), floats as YAML 1.2 reads them.

PyYAML follows YAML 1.1, where a float needs a dot, so ``1e-4`` would load as the *string*
"1e-4" and a learning rate written the way everyone writes it would be rejected. This loader
also reads the exponent forms YAML 1.2 allows (``1e-4``, ``5E3``, ``1.0e5``) as floats and is
otherwise ``yaml.SafeLoader``.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml


class _Loader(yaml.SafeLoader):
    pass


# What YAML 1.1's float rule misses: an exponent without a dot (1e-4) or without a sign (1.0e5).
# It always has an exponent, so no int or timestamp matches it, and the 1.1 rules stay as they are.
_FLOAT_EXPONENT = re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$")
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_EXPONENT, list("-+0123456789."))


def load_yaml(text: str):
    """Parse YAML text safely (``yaml.SafeLoader`` plus YAML 1.2 floats); raises ``yaml.YAMLError``."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader


def leading_comment(path: Path, width: int = 110) -> str:
    """The first sentence of a YAML file's leading comment block: how the built-in presets and
    studies say what they are (``ddlnl preset list``, ``ddlnl study list``)."""
    words = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        words += line.lstrip("#").split()
    text = " ".join(words)
    end = text.find(". ")
    text = text if end < 0 else text[: end + 1]
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"
