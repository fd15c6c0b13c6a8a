"""``interp prs ...`` and ``interp textspan ...`` commands (filled in below)."""

from __future__ import annotations


def add_commands(cli) -> None:
    return None
