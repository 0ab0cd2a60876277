"""The command line: help everywhere, version, clean errors."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from mtl_edge import __version__
from mtl_edge.cli import app

COMMANDS = [[], ["demo"], ["data"], ["data", "demo"], ["data", "import"], ["data", "describe"], ["data", "prepare"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "mtl-edge")
def test_every_command_has_help(command):
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_version():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"mtl-edge {__version__}"
    assert __version__ != "0.0.0+unknown"  # the package is installed, its metadata is found


def test_domain_errors_are_one_line_and_exit_1(tmp_path):
    result = CliRunner().invoke(app, ["data", "describe", str(tmp_path / "nowhere")])
    assert result.exit_code == 1
    assert "error:" in result.output and "no manifest" in result.output
    assert "Traceback" not in result.output


def test_bad_policy_is_refused(tmp_path):
    result = CliRunner().invoke(app, ["data", "prepare", str(tmp_path), "--on-bad-audio", "ignore"])
    assert result.exit_code == 1
    assert "--on-bad-audio must be one of fail, skip" in result.output


@pytest.mark.parametrize("command", [["train"], ["evaluate"], ["export"], ["bench"], ["report"]])
def test_later_stage_commands_have_help(command):
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
