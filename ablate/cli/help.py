"""How ``--help`` reads: each paragraph one flowing line, and flags shown without a type.

Typer's rich help keeps a docstring's line breaks after its first paragraph, and in the
command list the first paragraph's too, so a sentence broke wherever the source wrapped it.
It also prints every option's type, a flag's as ``<bool>``, as if ``--dry-run`` took a value.
"""

from __future__ import annotations

import inspect

from typer.core import TyperOption


def flowed(text: str | None) -> str | None:
    """``text`` with the lines of each paragraph joined (paragraphs: split by a blank line)."""
    if not text:
        return text
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(" ".join(line.strip() for line in p.splitlines()) for p in paragraphs)


def hide_flag_types() -> None:
    """A flag takes no value: no type column for it (``--help`` and ``--version`` included)."""
    shown = TyperOption.display_type_rich
    if getattr(shown, "hides_flags", False):
        return

    def display_type_rich(self, ctx):
        return None if self.is_flag else shown(self, ctx)

    display_type_rich.hides_flags = True
    TyperOption.display_type_rich = display_type_rich
