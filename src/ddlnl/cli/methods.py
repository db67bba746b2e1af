"""``ddlnl methods``: the registered distillers and baselines, and the presets."""

from __future__ import annotations


def add_parser(sub) -> None:
    sub.add_parser("methods", help="list distillation methods and presets")


def main(args) -> int:
    from ddlnl.baselines import list_baselines
    from ddlnl.distill import list_distillers
    from ddlnl.presets import list_presets

    print("methods: " + ", ".join(list_distillers()))
    print("baselines: " + ", ".join(list_baselines()))
    print("presets: " + ", ".join(list_presets()))
    return 0
