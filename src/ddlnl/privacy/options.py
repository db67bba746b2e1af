"""The audit's options: one definition for ``ddlnl privacy`` and a study's ``privacy:`` section.

Both read the same fields with the same defaults and the same checks, so a study cell audits
exactly as ``ddlnl privacy CELL_FOLDER --shadows K ...`` would. A check names the option as its
caller spells it (``--shadows`` on the command line, ``study.yaml: privacy.shadows`` in a study).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from ddlnl.errors import ConfigError

TARGETS = ("full_noisy", "random", "distilled")  # the default targets: the networks a run compares
ALL_TARGETS = TARGETS + ("dp_sgd",)
FLAGS = {"shadows": "--shadows", "audit_points": "--audit-points", "targets": "--targets", "dp_epsilon": "--dp-epsilon",
         "bootstrap": "--bootstrap"}


@dataclass(frozen=True)
class AuditOptions:
    """What an audit is asked for (docs/privacy.md); frozen and hashable, so a study cell can hold one."""

    shadows: int = 16
    audit_points: int = 1000
    targets: tuple[str, ...] = TARGETS
    dp_epsilon: float = 8.0
    bootstrap: int = 200

    def checked(self, names: dict[str, str] | None = None) -> AuditOptions:
        """The options after every check (a ConfigError names the first bad one as ``names`` spells
        it; default: the ``ddlnl privacy`` flags), targets without repeats, the budget a float."""
        names = FLAGS | (names or {})
        check_shadows(self.shadows, names["shadows"])
        _check_int(self.audit_points, names["audit_points"], 1, "a positive integer", "use e.g. 1000 (TPR at 0.1 % FPR needs 1000 or more)")
        _check_int(self.bootstrap, names["bootstrap"], 0, "a non-negative integer", "use e.g. 200 (0: no intervals)")
        targets = check_targets(self.targets, names["targets"])
        check_epsilon(self.dp_epsilon, names["dp_epsilon"])  # also when dp_sgd is not a target: a typo is caught early
        return AuditOptions(self.shadows, self.audit_points, targets, float(self.dp_epsilon), self.bootstrap)

    def to_dict(self) -> dict:
        """JSON-ready (targets a list): a study cell's config, and :func:`ddlnl.privacy.audit_run`'s keywords."""
        return asdict(self) | {"targets": list(self.targets)}

    @classmethod
    def from_dict(cls, d: dict) -> AuditOptions:
        """Back from :meth:`to_dict` (no checks: call :meth:`checked`)."""
        return cls(**(d | {"targets": parse_targets(d.get("targets", TARGETS))}))


OPTION_NAMES = tuple(f.name for f in fields(AuditOptions))


def parse_targets(value) -> tuple:
    """``"full_noisy,random"`` (the command line) or a list (YAML) as a tuple of names, unchecked."""
    if isinstance(value, str):
        return tuple(t.strip() for t in value.split(",") if t.strip())
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


def check_targets(targets, name: str = "--targets") -> tuple[str, ...]:
    targets = tuple(dict.fromkeys(parse_targets(targets)))
    unknown = [str(t) for t in targets if t not in ALL_TARGETS]
    if unknown or not targets:
        raise ConfigError(f"{name}: unknown privacy target(s): {', '.join(unknown) or '(none given)'}",
                          f"list one or more of: {', '.join(ALL_TARGETS)}")
    return targets


def check_shadows(shadows, name: str = "--shadows") -> None:
    if not isinstance(shadows, int) or isinstance(shadows, bool) or shadows < 2 or shadows % 2:
        raise ConfigError(f"{name} (the number of shadow networks) must be an even number >= 2, got {shadows!r}",
                          "use e.g. 16 (each audit example is then IN for 8 of them)")


def check_epsilon(epsilon, name: str = "--dp-epsilon") -> None:
    if not isinstance(epsilon, (int, float)) or isinstance(epsilon, bool) or not 0 < epsilon < float("inf"):
        raise ConfigError(f"{name} (the DP-SGD privacy budget epsilon) must be a positive number, got {epsilon!r}", "use e.g. 8")


def _check_int(value, name: str, minimum: int, what: str, fix: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{name} must be {what}, got {value!r}", fix)
