"""The wrapper every command runs in: warnings on stderr, the one domain error as a message and exit code 1.

Shared by ``mtl_edge.cli`` and the sub-apps it registers (``mtl_edge.devbed.cli``), which must not
import ``mtl_edge.cli`` itself (the device beds stay outside the product's import graph).
"""

from __future__ import annotations

import functools
import warnings

import typer

from mtl_edge.errors import MtlEdgeError


def _show_warning(message, category, filename, lineno, file=None, line=None):
    from mtl_edge.progress import stderr

    stderr.print(f"[yellow]warning:[/yellow] {message}", highlight=False, markup=True)


def cli_command(fn):
    """Run a command with warnings on stderr and MtlEdgeError -> clean exit 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from mtl_edge.progress import stderr

        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = _show_warning
            try:
                return fn(*args, **kwargs)
            except MtlEdgeError as exc:
                stderr.print(f"[bold red]error:[/bold red] {exc}", highlight=False, markup=True)
                raise typer.Exit(1) from None

    return wrapper
