"""Progress bars for long work, drawn on stderr so that stdout stays machine-readable."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

stderr = Console(stderr=True, soft_wrap=True)  # long paths in messages stay on one line


def progress_bar() -> Progress:
    """A rich progress bar (use as a context manager; ``add_task`` then ``advance``)."""
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=stderr,
    )


def stdout_console():
    """A console for tables on stdout; piped or captured output gets 160 columns instead of squeezed ones."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=160)
