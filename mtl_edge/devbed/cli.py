"""``mtl-edge devbed up|down|status NAME``: emulated device test beds.

``mtl_edge/cli.py`` registers this app lazily (``mtl_edge.cli_lazy``): it is imported only when a
``devbed`` command runs, and it imports nothing of ``mtl_edge.cli`` (no cycle between the two).
"""

from __future__ import annotations

import contextlib
import time
from typing import Annotated, Iterator

import typer

from mtl_edge.commands import cli_command

app = typer.Typer(no_args_is_help=True)  # its help text is where mtl_edge/cli.py registers it

Name = Annotated[str, typer.Argument(help="The bed: pi4 (an emulated Raspberry Pi 4 reached over SSH) or android (the real adb client against an emulated phone).")]


@contextlib.contextmanager
def _steps(name: str) -> Iterator:
    """A progress callback: each step as a line on stderr, and a spinner with the elapsed time on a terminal."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from mtl_edge.progress import stderr

    started = time.monotonic()
    if not stderr.is_terminal:
        def step(text: str) -> None:
            stderr.print(f"[{time.monotonic() - started:5.0f} s] devbed {name}: {text}", highlight=False, markup=False)

        yield step
        return
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=stderr,
                  transient=True) as bar:
        task = bar.add_task(f"devbed {name}", total=None)

        def step(text: str) -> None:
            bar.console.print(f"[{time.monotonic() - started:5.0f} s] devbed {name}: {text}", highlight=False,
                              markup=False)
            bar.update(task, description=f"devbed {name}: {text}")

        yield step


@app.command("up")
@cli_command
def up(name: Name):
    """Start the bed (idempotent) and print the path of its device profile as the last line.

    The first run builds the arm64 rootfs (~5 min) and caches it; later runs restore it (~15 s).
    Use the profile with `mtl-edge bench --device PATH`.
    """
    from mtl_edge import devbed

    with _steps(name) as step:
        profile = devbed.up(name, progress=step)
    typer.echo(str(profile))


@app.command("down")
@cli_command
def down(name: Name):
    """Stop every process the bed started, unmount and remove its network namespace (safe when it is down)."""
    from mtl_edge import devbed

    with _steps(name) as step:
        devbed.down(name, progress=step)
    typer.echo(f"devbed {name}: down")


@app.command("status")
@cli_command
def status(name: Name):
    """Whether the bed is up, its address, processes and profile."""
    from mtl_edge import devbed

    for key, value in devbed.status(name).items():
        typer.echo(f"{key}: {'' if value is None else value}")
