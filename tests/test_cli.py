"""The command line: help everywhere, version, clean errors."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from mtl_edge import __version__
from mtl_edge.cli import app

COMMANDS = [[], ["demo"], ["data"], ["data", "demo"], ["data", "import"], ["data", "describe"], ["data", "prepare"],
            ["data", "overlap"]]


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


@pytest.mark.slow
def test_demo_then_report_through_the_command_line(tmp_path):
    """The one-command demo on a tiny corpus with a small training budget: corpus, five trainings, the export,
    the desktop benchmark and the report, as a user runs it; then `report` re-renders its results."""
    import json

    corpus, runs = tmp_path / "corpus", tmp_path / "runs"
    result = CliRunner().invoke(app, ["demo", "--out", str(corpus), "--runs", str(runs), "--scale", "0.03",
                                      "--steps", "60"])
    assert result.exit_code == 0, result.output
    assert "demo finished in" in result.output
    config = json.loads((runs / "config.json").read_text())
    assert config["train"]["steps"] == 60  # the demo's budget is recorded in its run config
    assert config["train"]["patience"] == 10  # its own early stopping (train's default is 30)
    manifest = json.loads((runs / "export" / "manifest.json").read_text())
    models = {a["model"] for a in manifest["artefacts"]}
    assert models >= {"multi", "single:kws", "single:speaker", "single:scene", "single:instrument"}
    lines = [json.loads(x) for f in sorted((runs / "export" / "bench").glob("*.jsonl")) for x in f.read_text().splitlines()]
    compares = [m for m in lines if m["kind"] == "compare"]
    assert {m["runtime"] for m in compares} == {"onnxruntime", "litert"}
    assert all(m["runtime_ratio_shared_frontend"] > 0 for m in compares)
    report = runs / "export" / "bench" / "report" / "report.md"
    assert report.is_file() and str(report) in result.output
    again = CliRunner().invoke(app, ["report", str(runs / "export" / "bench"), "--out", str(tmp_path / "again")])
    assert again.exit_code == 0, again.output
    def body(path):  # the same tables and figures; only the list of source files may be in another order
        text = path.read_text().replace(str(path.parent), "REPORT")
        return [line for line in text.splitlines() if ".jsonl" not in line]

    assert body(tmp_path / "again" / "report.md") == body(report)
    figures = [line.split("(")[-1].rstrip(")") for line in body(report) if line.startswith("![")]
    assert figures and all((tmp_path / "again" / f).is_file() for f in figures)
    empty = CliRunner().invoke(app, ["report", str(tmp_path), "--out", str(tmp_path / "none")])
    assert empty.exit_code == 1 and "no results (.jsonl)" in empty.output
