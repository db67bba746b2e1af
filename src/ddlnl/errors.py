"""Errors a user can act on.

Every failure caused by input (a path, a file, a name, a number) is raised as a
:class:`DdlnlError` whose message names the problem and says how to fix it. The CLI
prints that message and exits with status 2, without a traceback unless ``--debug``.
"""

from __future__ import annotations


class DdlnlError(Exception):
    """A problem with the user's input or environment, with the fix in the message."""

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(problem if not fix else f"{problem}\nFix: {fix}")


class DataError(DdlnlError):
    """Missing, corrupt or inconsistent data files."""


class ConfigError(DdlnlError):
    """Unknown names, out-of-range numbers or malformed preset/config values."""


def check_choice(kind: str, value: str, choices) -> str:
    """Return ``value`` if it is one of ``choices``, else raise a ConfigError listing them."""
    choices = list(choices)
    if value not in choices:
        raise ConfigError(
            f"unknown {kind} {value!r}",
            f"use one of: {', '.join(sorted(map(str, choices)))}",
        )
    return value


def yaml_error(what: str, exc: Exception) -> ConfigError:
    """A YAML syntax error as one line: what, the parser's problem, and where (line, column)."""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return ConfigError(f"{what} is not valid YAML: {problem}{where}", "fix the YAML syntax there (indentation, brackets, quotes)")
