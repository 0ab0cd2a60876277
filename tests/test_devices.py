"""Device profiles with missing or bad fields: each is refused with a message naming the file and the field,
before anything is connected or run."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from mtl_edge.bench.devices import load_device
from mtl_edge.bench.transports import transport_for
from mtl_edge.cli import app
from mtl_edge.errors import MtlEdgeError


def _profile(tmp_path, text: str, name: str = "dev.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def _fields(**values) -> str:
    return "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())


LOCAL = dict(name="box", transport="local", workdir="/tmp/mtl-edge-test-devices")


@pytest.mark.parametrize("missing", ["transport", "workdir"])
def test_a_missing_required_field_is_named(tmp_path, missing):
    path = _profile(tmp_path, _fields(**{k: v for k, v in LOCAL.items() if k != missing}))
    with pytest.raises(MtlEdgeError, match=rf"^{path}: the device profile needs a '{missing}' \(a string\)$"):
        load_device(path)
    empty = _profile(tmp_path, _fields(**{**LOCAL, missing: ""}), "empty.toml")
    with pytest.raises(MtlEdgeError, match=rf"empty\.toml: the device profile needs a '{missing}'"):
        load_device(empty)
    number = _profile(tmp_path, _fields(**{**LOCAL, missing: 3}), "number.toml")
    with pytest.raises(MtlEdgeError, match=rf"number\.toml: the device profile needs a '{missing}' \(a string\)"):
        load_device(number)


def test_bad_toml_and_unknown_profiles_are_named(tmp_path):
    broken = _profile(tmp_path, 'name = "box"\ntransport = local\n')
    with pytest.raises(MtlEdgeError, match=rf"{broken}: not a valid TOML device profile \(.*line 2"):
        load_device(broken)
    with pytest.raises(MtlEdgeError, match=r"unknown device profile 'no-such-phone': .*known devices: .*desktop.*"
                                           r"or give the path of a \.toml profile"):
        load_device("no-such-phone")
    with pytest.raises(MtlEdgeError, match=r"unknown device profile .*gone\.toml"):
        load_device(tmp_path / "gone.toml")


@pytest.mark.parametrize("threads, message", [("two", "threads must be an integer"), (0, "threads must be >= 1"),
                                              (-3, "threads must be >= 1")])
def test_bad_threads_are_refused(tmp_path, threads, message):
    path = _profile(tmp_path, _fields(**LOCAL, threads=threads))
    with pytest.raises(MtlEdgeError, match=rf"{path}: {message}"):
        load_device(path)


def test_an_unknown_transport_and_a_template_are_refused_before_connecting(tmp_path):
    path = _profile(tmp_path, _fields(**{**LOCAL, "transport": "carrier-pigeon"}))
    with pytest.raises(MtlEdgeError, match=r"device box: unknown transport 'carrier-pigeon'; known: adb, local, ssh"):
        transport_for(load_device(path))
    with pytest.raises(MtlEdgeError, match=r"device pi4: the profile \(.*pi4\.toml\) is a template: copy it, fill in"
                                           r".*remove `template = true`"):
        transport_for(load_device("pi4"))


def test_ssh_fields_are_checked_before_connecting(tmp_path):
    base = dict(name="pi", transport="ssh", workdir="/home/pi/w", python="/usr/bin/python3")
    with pytest.raises(MtlEdgeError, match=r"^device pi: the profile needs a `host` for the ssh transport$"):
        transport_for(load_device(_profile(tmp_path, _fields(**base))))
    for field, value in (("port", "twenty-two"), ("connect_timeout", "soon"), ("keepalive", [5])):
        path = _profile(tmp_path, _fields(**base, host="127.0.0.1", **{field: value}), f"{field}.toml")
        with pytest.raises(MtlEdgeError, match=r"device pi: port, connect_timeout and keepalive must be numbers"):
            transport_for(load_device(path))


def test_adb_fields_are_checked_before_attaching(tmp_path):
    from conftest import _require

    _require("adb", "adb")
    base = dict(name="phone", transport="adb", workdir="/data/local/tmp/w", python="/data/local/tmp/python")
    with pytest.raises(MtlEdgeError, match=r"device phone: workdir 'data/local' must be an absolute path"):
        transport_for(load_device(_profile(tmp_path, _fields(**{**base, "workdir": "data/local"}))))
    with pytest.raises(MtlEdgeError, match=r"device phone: cpu_affinity 'big' / cpu_mask None is not a CPU list"):
        transport_for(load_device(_profile(tmp_path, _fields(**base, cpu_affinity="big"), "big.toml")))
    with pytest.raises(MtlEdgeError, match=r"device phone: adb_server_port and adb_timeout must be numbers"):
        transport_for(load_device(_profile(tmp_path, _fields(**base, adb_server_port="x"), "port.toml")))


def test_the_cli_turns_a_bad_profile_into_exit_1_with_the_message(tmp_path):
    path = _profile(tmp_path, _fields(name="box", workdir="/tmp/x"))
    result = CliRunner().invoke(app, ["bench", str(tmp_path / "no-export"), "--device", str(path)])
    assert result.exit_code == 1
    assert f"{path}: the device profile needs a 'transport' (a string)" in result.output.replace("\n", "")
    assert "Traceback" not in result.output


@pytest.mark.parametrize("flag", ["emulated", "template"])
def test_a_flag_given_as_a_string_is_refused(tmp_path, flag):
    """The string "false" is not false: a quoted flag is refused naming the field."""
    path = _profile(tmp_path, _fields(**LOCAL, **{flag: "false"}))
    with pytest.raises(MtlEdgeError, match=rf"{flag} must be true or false \(a TOML boolean, unquoted\), not 'false'"):
        load_device(path)


@pytest.mark.parametrize("flag", ["accept_unknown_host", "allow_agent", "look_for_keys"])
def test_an_ssh_flag_given_as_a_string_is_refused(tmp_path, flag):
    """accept_unknown_host = "false" must not trust unknown host keys: refused before connecting."""
    base = dict(name="pi", transport="ssh", workdir="/home/pi/w", python="/usr/bin/python3", host="127.0.0.1")
    path = _profile(tmp_path, _fields(**base, **{flag: "false"}))
    with pytest.raises(MtlEdgeError, match=rf"^device pi: {flag} must be true or false"):
        transport_for(load_device(path))
