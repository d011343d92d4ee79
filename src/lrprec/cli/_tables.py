"""Aligned text tables for the CLI's human output (``--json`` output never goes through here).

Built on rich (typer's dependency): column widths count terminal cells, so long, wide
(CJK, emoji) or odd text stays inside its column; long text is cut with an ellipsis
instead of pushing the next column. No colour codes are written, so the text is the
same on a terminal, in a pipe and in a file.
"""
from __future__ import annotations

import io
import shutil
import sys
from dataclasses import dataclass
from typing import Any, Sequence

#: Width used when stdout is not a terminal (pipes, files): wide enough for ids + titles.
PIPE_WIDTH = 160


@dataclass(frozen=True)
class Col:
    """One column: header, alignment, and the most cells its text may take (None: as wide as needed)."""

    header: str
    justify: str = "left"
    max_width: int | None = None
    wrap: bool = False


def output_width() -> int:
    """Cells per line: the terminal's width, or ``PIPE_WIDTH`` when stdout is not a terminal."""
    if sys.stdout.isatty():
        return max(60, shutil.get_terminal_size((PIPE_WIDTH, 24)).columns)
    return PIPE_WIDTH


def table_text(columns: Sequence[Col], rows: Sequence[Sequence[Any]], *, title: str | None = None,
               empty: str = "(none)", width: int | None = None) -> str:
    """``rows`` as an aligned table with a header line; ``empty`` when there are no rows."""
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    if not rows:
        return (f"{title}\n" if title else "") + empty
    table = Table(box=box.SIMPLE_HEAD, title=title, title_justify="left", title_style=None, header_style=None,
                  show_edge=False, pad_edge=False, expand=False)
    for c in columns:
        table.add_column(c.header, justify=c.justify, max_width=c.max_width, no_wrap=not c.wrap,
                         overflow="fold" if c.wrap else "ellipsis")
    for r in rows:
        table.add_row(*(Text("" if v is None else str(v)) for v in r))  # Text: no rich markup is interpreted
    buf = io.StringIO()
    Console(file=buf, width=width or output_width(), color_system=None, force_terminal=False, no_color=True,
            highlight=False, emoji=False, legacy_windows=False).print(table)
    return "\n".join(line.rstrip() for line in buf.getvalue().splitlines()).strip("\n")
