"""The first word of a ``recstack-<tool> <command> [key=value ...]`` command line, checked the same way everywhere."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def split_command(prog: str, argv: Sequence[str] | None, commands: Sequence[str], usage: str) -> tuple[str, list[str]]:
    """``(command, the rest)``; no arguments or ``-h`` prints the usage (exit 2 / 0), an unknown command one error
    line and the usage (exit 2)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage, file=sys.stdout if args else sys.stderr)
        sys.exit(0 if args else 2)
    command, rest = args[0], args[1:]
    if command not in commands:
        print(f"{prog}: error: unknown command {command!r}; use one of {list(commands)}", file=sys.stderr)
        print(usage, file=sys.stderr)
        sys.exit(2)
    return command, rest
