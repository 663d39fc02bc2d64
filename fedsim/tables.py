"""Markdown tables, written one way for every table fedsim prints or saves."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

_RULES = {"": "---", "left": ":---", "right": "---:"}


def markdown_table(
    headers: Sequence[str], rows: Iterable[Sequence[object]], align: Sequence[str] = ()
) -> str:
    """A GitHub Markdown table (no trailing newline); ``align`` per column: "left" or "right".

    A ``|`` inside a cell is escaped, so a label never splits its cell.
    """
    if align and len(align) != len(headers):
        raise ValueError(f"align: {len(align)} entries for {len(headers)} columns")

    def line(values: Sequence[object]) -> str:
        return "| " + " | ".join(str(v).replace("|", "\\|") for v in values) + " |"

    rule = line([_RULES[a] for a in align] if align else ["---"] * len(headers))
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])
