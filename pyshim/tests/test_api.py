"""The connector through pyinfra's Python API, in this (not monkey-patched) process,
against the real binary and the target's machines (conftest)."""

from __future__ import annotations

import os
import time
from io import BytesIO

import gevent
import pytest
from pyinfra.api import Config, Inventory, State
from pyinfra.api.connect import connect_all, disconnect_all

from pyinfra_orbstack import _shared


@pytest.fixture()
def api_state(orb, monkeypatch):
    for key, value in orb.env.items():
        if os.environ.get(key) != value:
            monkeypatch.setenv(key, value)
    machines = [orb.machine("deploy"), orb.machine("files"), orb.machine("api")]
    inventory = Inventory(([f"@orbstack/{m}" for m in machines], {}))
    state = State(inventory, Config())
    connect_all(state)
    yield state, [inventory.get_host(f"@orbstack/{m}") for m in machines]
    disconnect_all(state)


def test_hosts_run_commands_concurrently_over_one_process(api_state):
    state, hosts = api_state
    assert len(state.activated_hosts) == 3
    client = _shared.for_state(state).client
    assert client is not None and client.alive

    started = time.monotonic()
    runs = [gevent.spawn(host.run_shell_command, "sleep 1; hostname") for host in hosts]
    gevent.joinall(runs, raise_error=True)
    assert time.monotonic() - started < 2.5  # not 3 s one after another
    for host, run in zip(hosts, runs):
        ok, output = run.value
        assert ok and output.stdout == host.data.orbstack_machine


def test_commands_still_work_after_disconnect(api_state):
    # pyinfra removes its sudo askpass file with run_shell_command *after*
    # connector.disconnect(); the last host out must still be able to do that.
    state, hosts = api_state
    for host in hosts:
        host.connector.disconnect()
    assert _shared.for_state(state).client is None  # the process was shut down
    ok, output = hosts[0].run_shell_command("echo still here")
    assert ok and output.stdout == "still here"
    assert _shared.for_state(state).client is None  # and not left running


def test_last_disconnect_stops_the_binary_even_after_a_reconnect(api_state):
    state, hosts = api_state
    client = _shared.for_state(state).client
    hosts[0].connector.connect()  # pyinfra reconnects after server.reboot
    assert _shared.for_state(state).client is client
    disconnect_all(state)
    assert _shared.for_state(state).client is None
    assert not client.alive


@pytest.mark.parametrize("sudo", [False, True])
def test_put_over_a_directory_is_an_error_not_a_file_inside_it(api_state, orb, sudo):
    # pyinfra's files.put checks this itself; host.put_file (and any caller
    # racing a mkdir) relies on the connector.
    _, hosts = api_state
    host = hosts[0]
    machine = host.data.orbstack_machine
    orb.orbctl("run", "-m", machine, "-u", "root", "sh", "-c", "rm -rf /tmp/t-a-dir && mkdir -m 777 /tmp/t-a-dir")
    with pytest.raises(OSError, match=f"writing /tmp/t-a-dir on {machine} failed: .*/tmp/t-a-dir: is a directory"):
        host.put_file(BytesIO(b"x"), "/tmp/t-a-dir", _sudo=sudo)
    listing = orb.orbctl("run", "-m", machine, "-u", "root", "ls", "-A", "/tmp/t-a-dir").stdout
    assert listing == ""


@pytest.mark.parametrize("sudo", [False, True])
def test_in_memory_put_and_get_are_byte_exact_and_leave_no_spool(api_state, sudo):
    _, hosts = api_state
    host = hosts[0]
    data = bytes(range(256)) * 300 + b"\r\n\x00end"
    path = f"/tmp/t-mem-{int(sudo)}.bin"
    assert host.put_file(BytesIO(data), path, _sudo=sudo)
    got = BytesIO()
    assert host.get_file(path, got, _sudo=sudo)
    assert got.getvalue() == data
    spool = host.connector._local_temp_dir
    assert spool is not None and os.listdir(spool) == []  # spooled copies removed


def test_a_line_longer_than_a_mebibyte_stays_one_line(api_state):
    _, hosts = api_state
    ok, output = hosts[0].run_shell_command("head -c 2500000 /dev/zero | tr '\\0' x; echo; echo next")
    assert ok
    assert [len(line) for line in output.stdout_lines] == [2500000, 4]


def test_heavy_output_reaches_pyinfra_as_the_lines_printed_in_order(api_state):
    # Output travels in batches of many lines (docs/protocol.md): pyinfra must
    # still get every line, whole, in order, with stderr where it was printed.
    _, hosts = api_state
    # Two pipes: what one stream printed is ahead of the other's only once
    # it has been read, hence the pauses.
    command = ("seq 200000; sleep 0.5; echo 'between' >&2; sleep 0.5; printf 'cr\\r\\n\\n\\377\\n'; "
               "seq 3 | tr -d '\\n' >&2; printf 'last'")
    ok, output = hosts[0].run_shell_command(command)
    assert ok
    lines = [(line.buffer_name, line.line) for line in output.combined_lines]
    assert lines[:200000] == [("stdout", str(i)) for i in range(1, 200001)]
    assert lines[200000:] == [("stderr", "between"), ("stdout", "cr\r"), ("stdout", ""),
                              ("stdout", "\ufffd"), ("stdout", "last"), ("stderr", "123")]


def test_stdin_too_large_for_one_message_fails_that_command_only(api_state):
    # Over the binary's frame limit the binary would close the connection under
    # every host's calls; the shim refuses it first, saying what to do.
    state, hosts = api_state
    client = _shared.for_state(state).client
    assert client.max_frame == 16 << 20
    with pytest.raises(OSError, match=r"over the 16777216 bytes .*files\.put"):
        hosts[0].run_shell_command("wc -c", _stdin=b"x" * (13 << 20))
    assert client.alive
    ok, output = hosts[1].run_shell_command("wc -c", _stdin=b"y" * (1 << 20))
    assert ok and output.stdout == str((1 << 20) + 1)  # pyinfra adds the last newline


def test_text_that_is_not_unicode_is_refused_not_altered(api_state):
    # A lone surrogate (a file name decoded with surrogateescape) would reach
    # the machine as U+FFFD: a different command than the one asked for.
    state, hosts = api_state
    name = b"caf\xe9".decode("utf-8", "surrogateescape")
    with pytest.raises(OSError, match="not valid Unicode"):
        hosts[0].run_shell_command(f"touch /tmp/{name}")
    assert _shared.for_state(state).client.alive
    ok, output = hosts[0].run_shell_command("ls /tmp | grep -c caf || true")
    assert ok and output.stdout == "0"
