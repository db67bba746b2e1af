"""``ddlnl preset list|show NAME``: the built-in presets, and one preset as written, comments included."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("preset", help="list the built-in presets, or print one with its comments")
    p.add_argument("action", choices=["list", "show"])
    p.add_argument("name", nargs="?", help="with show: smoke, quick, paper, or a preset YAML path")


def main(args) -> int:
    from ddlnl.errors import ConfigError
    from ddlnl.presets import list_presets, load_preset, preset_file
    from ddlnl.utils.yamlio import leading_comment

    if args.action == "list":
        for name in list_presets():
            print(f"{name:6s} version {load_preset(name).get('version')}  {leading_comment(preset_file(name))}")
        print("\nprint one with its comments: ddlnl preset show NAME")
        return 0
    if not args.name:
        raise ConfigError("ddlnl preset show needs a preset name", f"e.g. ddlnl preset show quick (presets: {', '.join(list_presets())})")
    load_preset(args.name)  # a clear error for an unknown name or a malformed file, before printing it
    print(preset_file(args.name).read_text(), end="")
    return 0
