"""Connect failures the real binary can't be made to produce: a missing binary, a
binary from another install. Each must be one clear line per host, no traceback."""

from __future__ import annotations

from conftest import run_pyinfra


def test_binary_missing(fake_binary, tmp_path):
    env = fake_binary("ok")
    env["PYINFRA_ORBSTACK_BINARY"] = str(tmp_path / "not-there")
    result = run_pyinfra(env, "@orbstack/fake", "exec", "--", "true")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"PYINFRA_ORBSTACK_BINARY is set to '{tmp_path / 'not-there'}', which is not a file" in output
    assert "Traceback" not in output


def test_protocol_mismatch_names_both_versions_and_the_fix(fake_binary):
    # A binary of the first protocol (one line per command.output) left on
    # PATH by an older install, under this shim.
    env = fake_binary("ok", FAKE_PROTOCOL_VERSION="1")
    result = run_pyinfra(env, "@orbstack/fake", "exec", "--", "true")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "speaks protocol version 1" in output
    assert "speaks version 2" in output
    assert "pip install --force-reinstall pyinfra-orbstack" in output
    assert "Traceback" not in output


def test_hosts_share_one_binary_process(fake_binary):
    # Three hosts, one process: the fake logs nothing, so count handshakes via
    # `pyinfra --debug`, which shows each start of the binary.
    env = fake_binary("ok", FAKE_MACHINES="a,b,c")
    result = run_pyinfra(env, "--debug", "@orbstack/a,@orbstack/b,@orbstack/c", "exec", "--", "echo hi")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert output.count(" serve --debug (pid ") == 1
    for host in "abc":
        assert f"[@orbstack/{host}] hi" in output


def test_machine_that_fails_to_start(fake_binary):
    env = fake_binary("start_fails")
    result = run_pyinfra(env, "@orbstack/fake", "exec", "--", "true")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Could not start OrbStack machine `fake`: [-32098] start 'fake': simulated failure" in output
    assert "orbctl logs fake" in output
    assert "Traceback" not in output
