"""Terminal tables of the CLI, drawn by ``rich`` (``--json`` output never goes through here).

Columns after the first ``left`` ones are right-aligned (numbers). When stdout is not a terminal
(a pipe, a file, a test) the table is printed at its natural width, so no cell is wrapped or cut
whatever ``COLUMNS`` says; in a terminal rich fits it to the window.
"""

from __future__ import annotations

import sys
from typing import Any, Iterable, Sequence

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table


# box.SIMPLE_HEAD drawn with "-", for a stdout whose encoding has no box-drawing characters
_ASCII_HEAD = box.Box("    \n    \n -- \n    \n    \n    \n    \n    \n")


def make_table(columns: Sequence[str], rows: Iterable[Sequence[Any]], *, title: str | None = None,
               left: int = 1) -> Table:
    """A table with a header rule and no vertical borders; cells are ``str()`` of the values; a
    ``None`` in ``rows`` draws a rule under the row before it."""
    t = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", title_style="bold",
              header_style="bold", pad_edge=False, show_edge=False)
    for i, c in enumerate(columns):
        t.add_column(c, justify="left" if i < left else "right", no_wrap=True)
    for r in rows:
        if r is None:
            if t.rows:
                t.rows[-1].end_section = True
            continue
        t.add_row(*("" if v is None else str(v) for v in r))
    return t


def _fit_box(table: Table, out) -> None:
    """Draw the header rule with "-" when ``out``'s encoding has no box-drawing characters."""
    try:
        "\u2500".encode(getattr(out, "encoding", None) or "utf-8")
    except (UnicodeEncodeError, LookupError):
        table.box = _ASCII_HEAD


def print_table(table: Table, file=None) -> None:
    """Print ``table`` to ``file`` (default: the current ``sys.stdout``)."""
    out = file if file is not None else sys.stdout
    console = Console(file=out, highlight=False, soft_wrap=False)
    _fit_box(table, out)
    if console.is_terminal:
        console.print(table)
    else:
        print(render_table(table), file=out)


def echo_table(columns: Sequence[str], rows: Iterable[Sequence[Any]], *, title: str | None = None,
               left: int = 1) -> None:
    """``print_table(make_table(...))``."""
    print_table(make_table(columns, rows, title=title, left=left))


def render_table(table: Table) -> str:
    """The table as plain text at its natural width (no colour), for commands that build one string
    they print to stdout."""
    import io

    _fit_box(table, sys.stdout)
    buf = io.StringIO()
    probe = Console(file=buf, width=100_000, highlight=False, color_system=None)
    need = Measurement.get(probe, probe.options, table).maximum
    Console(file=buf, width=max(need, 20), highlight=False, color_system=None, soft_wrap=False).print(table)
    return "\n".join(line.rstrip() for line in buf.getvalue().splitlines())
