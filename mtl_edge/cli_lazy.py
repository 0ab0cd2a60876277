"""Typer sub-apps imported when one of their commands runs, not when ``mtl_edge.cli`` is imported.

Why: optional parts of the tool (the device test beds) stay outside the product's import graph, so
importing the CLI, or running a command that does not need them, loads none of their code.
"""

from __future__ import annotations

import importlib

import typer
from typer.core import TyperGroup


class LazyGroup(TyperGroup):
    """A click group whose commands are those of the typer app named by ``target`` (``"module:attr"``)."""

    target = ""
    _loaded: dict | None = None

    @property
    def commands(self) -> dict:
        if self._loaded is None:
            module, _, attr = self.target.partition(":")
            self._loaded = dict(typer.main.get_group(getattr(importlib.import_module(module), attr)).commands)
        return self._loaded

    @commands.setter
    def commands(self, value) -> None:
        if value:  # the placeholder app registers no commands of its own: keep loading lazily
            self._loaded = dict(value)


def lazy_typer(target: str, **settings) -> typer.Typer:
    """A placeholder for ``app.add_typer`` whose commands come from ``target`` on first use.

    ``settings`` (help, no_args_is_help, ...) describe the group without importing it, so that
    ``mtl-edge --help`` lists it without loading it either.
    """
    group = type(f"Lazy[{target}]", (LazyGroup,), {"target": target})
    return typer.Typer(cls=group, **settings)
