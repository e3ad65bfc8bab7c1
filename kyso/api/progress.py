"""The one progress bar every long CLI command shows (on stderr, so stdout stays data)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def progress_bar(console: Console, *, disable: bool = False) -> Progress:
    """Description, bar, done/total, elapsed time; stays on screen when finished."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
        disable=disable,
    )
