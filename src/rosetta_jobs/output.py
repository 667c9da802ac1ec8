"""How the operators' commands print: tables for people (``rich``), one JSON document for scripts (``--json``).

A command builds one JSON-able answer and says how to draw it; ``Output`` decides which of the two is
printed. Warnings go to stderr in both modes, so ``--json`` output stays a single parseable document.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from rich import box
from rich.console import Console
from rich.table import Table

__all__ = ["Output", "ago", "clock", "seconds"]

#: Width of a table printed to a pipe or a file (a terminal's own width is used otherwise).
PIPE_WIDTH = 200


class Output:
    """Prints a command's answer as a table or as JSON, and its warnings to stderr."""

    def __init__(self, *, json_mode: bool, stream: TextIO | None = None, errors: TextIO | None = None) -> None:
        self.json_mode = json_mode
        self.stream = stream or sys.stdout
        self.errors = errors or sys.stderr
        width = None if self.stream.isatty() else PIPE_WIDTH  # a pipe has no width: rich would say 80
        self.console = Console(file=self.stream, width=width, highlight=False, soft_wrap=False)

    def emit(self, data: Any, draw: Callable[[Output], None]) -> None:
        """``data`` as JSON in ``--json`` mode, else whatever ``draw`` prints."""
        if self.json_mode:
            self.stream.write(json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n")
        else:
            draw(self)

    def table(self, title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]], *, empty: str) -> None:
        """A table; columns whose name starts with ``>`` are right-aligned (numbers)."""
        if not rows:
            self.console.print(f"{title}: {empty}" if title else empty)
            return
        table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
        for column in columns:
            numeric = column.startswith(">")
            table.add_column(column.lstrip(">"), justify="right" if numeric else "left", overflow="fold")
        for row in rows:
            table.add_row(*("" if cell is None else str(cell) for cell in row))
        self.console.print(table)

    def fields(self, pairs: Sequence[tuple[str, Any]]) -> None:
        """``name  value`` lines, for one object (``inspect``)."""
        table = Table(box=None, show_header=False, pad_edge=False)
        table.add_column(style="bold", no_wrap=True)
        table.add_column(overflow="fold")
        for name, value in pairs:
            if value is not None and value != "":
                table.add_row(name, str(value))
        self.console.print(table)

    def line(self, text: str) -> None:
        self.console.print(text, markup=False)

    def warn(self, text: str) -> None:
        """A warning for the reader, on stderr whatever the mode."""
        self.errors.write(f"warning: {text}\n")


def clock(epoch: float | None) -> str:
    """Local date and time of an epoch (seconds), to the second; empty for ``None``."""
    return dt.datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S") if epoch else ""


def seconds(value: float | None) -> str:
    """A duration: ``0.35 s``, ``12.4 s``, ``3 min 5 s``; empty for ``None``."""
    if value is None:
        return ""
    if value < 10:
        return f"{value:.2f} s"
    if value < 120:
        return f"{value:.1f} s"
    minutes, rest = divmod(int(value), 60)
    return f"{minutes} min {rest} s"


def ago(epoch: float | None, now: float) -> str:
    return f"{seconds(max(now - epoch, 0.0))} ago" if epoch else ""
