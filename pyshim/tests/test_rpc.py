"""The JSON-RPC client against misbehaving binaries (tests/fake_binary.py).

The real binary can't be made to crash, hang or garble its output on demand, so
these failure paths use the fake; everything else is tested against the real one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import gevent
import pytest

from pyinfra_orbstack import _rpc



def start(fake_binary, mode: str) -> _rpc.RPCClient:
    fake_binary(mode)
    client = _rpc.RPCClient([os.environ["PYINFRA_ORBSTACK_BINARY"], "serve"])
    client.call("initialize", {"protocol_version": _rpc.PROTOCOL_VERSION, "client_version": "t"}, timeout=10)
    return client


def run_params(command: str, **extra) -> dict:
    return {"machine": "fake", "command": command, "user": "", "workdir": "", **extra}


def run_lines(client: _rpc.RPCClient, command: str, **kwargs) -> tuple[dict | None, list[tuple[str, str]]]:
    """command.run, and the lines it printed as (stream, line), as _commands makes them."""
    assembler, got = _rpc.OutputLines(), []

    def take(completed):
        got.extend((stream, line) for stream, lines in completed for line in lines)

    result = None
    try:
        result = client.call("command.run", run_params(command), on_output=lambda runs: take(assembler.feed(runs)),
                             **kwargs)
    finally:
        take(assembler.end())
    return result, got


def test_lines_cut_across_notifications_reach_the_caller_whole(fake_binary):
    # A run may end anywhere in a line, and a line may span many runs: pyinfra
    # must see the lines the command printed, as @ssh gives them.
    client = start(fake_binary, "split_runs")
    _, got = run_lines(client, "printf 'abcdefghijklmnopqrst\\nshort\\n\\nx\\r\\n'; printf 'ABCDEFGHIJKLMNOP' >&2",
                       timeout=10)
    assert [line for stream, line in got if stream == "stdout"] == ["abcdefghijklmnopqrst", "short", "", "x\r"]
    assert [line for stream, line in got if stream == "stderr"] == ["ABCDEFGHIJKLMNOP"]
    client.close()


def test_output_lines_keep_completion_order_and_end_with_unfinished_lines():
    lines = _rpc.OutputLines()
    assert lines.feed([("stdout", "a"), ("stderr", "e1\ne"), ("stdout", "b\nc\n"), ("stdout", "")]) == [
        ("stderr", ["e1"]), ("stdout", ["ab", "c"])]
    assert lines.feed([("stderr", "2")]) == []
    assert lines.feed([("stdout", "tail")]) == []
    assert lines.end() == [("stdout", ["tail"]), ("stderr", ["e2"])]
    assert lines.end() == []


@pytest.mark.parametrize("mode", ["die_on_run", "die_with_child"])
def test_binary_dying_fails_the_pending_call_within_a_second(fake_binary, mode):
    client = start(fake_binary, mode)
    lines = []
    started = time.monotonic()
    with pytest.raises(ConnectionError) as raised:
        client.call("command.run", run_params("sleep 10"), on_output=lines.extend)
    assert time.monotonic() - started < 1.0
    assert lines == [("stdout", "started\n")]  # output sent before the crash still arrives
    assert "exited with status 3" in str(raised.value) or "closed its output" in str(raised.value)
    assert "fake: dying now" in str(raised.value)  # the binary's last words explain the crash

    # Later calls fail at once instead of hanging on a dead pipe.
    started = time.monotonic()
    with pytest.raises(ConnectionError):
        client.call("machines.list", {})
    assert time.monotonic() - started < 0.1
    client.close()


def test_every_concurrent_call_fails_when_the_binary_dies(fake_binary):
    fake_binary("die_on_run")
    client = _rpc.RPCClient([os.environ["PYINFRA_ORBSTACK_BINARY"], "serve"])
    # Twenty hosts waiting on the same binary: initialize calls that never get
    # to finish before one command.run kills it.
    waiting = [gevent.spawn(client.call, "command.run", run_params("true")) for _ in range(20)]
    started = time.monotonic()
    gevent.joinall(waiting, timeout=5)
    assert time.monotonic() - started < 1.0
    assert all(isinstance(g.exception, ConnectionError) for g in waiting)
    client.close()


def test_unparseable_output_fails_pending_calls(fake_binary):
    client = start(fake_binary, "garbage")
    with pytest.raises(ConnectionError, match="could not be parsed|without Content-Length|closed"):
        client.call("machines.list", {}, timeout=5)
    client.close()


def test_timeout_cancels_the_request_and_keeps_the_client_usable(fake_binary):
    client = start(fake_binary, "silent_on_run")
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        client.call("command.run", run_params("sleep 30"), timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 1.0
    # The client still works for other requests afterwards.
    result = client.call("initialize", {"protocol_version": _rpc.PROTOCOL_VERSION, "client_version": "t"}, timeout=5)
    assert result["protocol_version"] == _rpc.PROTOCOL_VERSION
    client.close()
    assert not client.alive


def test_close_stops_the_binary(fake_binary):
    client = start(fake_binary, "ok")
    pid = client.pid
    client.close()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_error_replies_become_rpc_errors(fake_binary):
    client = start(fake_binary, "ok")
    with pytest.raises(_rpc.RPCError) as raised:
        client.call("machine.connect", {"machine": "nope", "start": True, "timeout": 5, "create": None})
    assert raised.value.code == _rpc.MACHINE_NOT_FOUND
    assert raised.value.kind == "machine_not_found"
    assert raised.value.data["available"] == ["fake"]
    client.close()


CONCURRENCY_SCRIPT = """
import sys, time
if sys.argv[1] == "patched":
    from gevent import monkey; monkey.patch_all()
import gevent
from pyinfra_orbstack import _rpc
client = _rpc.RPCClient([sys.argv[2], "serve"])
client.call("initialize", {"protocol_version": _rpc.PROTOCOL_VERSION, "client_version": "t"}, timeout=10)
ticks = []
ticker = gevent.spawn(lambda: [ticks.append(gevent.sleep(0.05)) for _ in range(1000)])
def one(i):
    lines = []
    result = client.call("command.run", {"machine": "fake", "command": f"sleep 0.5; echo out-{i}; echo err-{i} >&2",
                         "user": "", "workdir": ""}, on_output=lines.extend)
    return result["exit_code"], lines
started = time.monotonic()
calls = [gevent.spawn(one, i) for i in range(20)]
gevent.joinall(calls, raise_error=True)
elapsed = time.monotonic() - started
ticker.kill()
for i, call in enumerate(calls):
    code, lines = call.value
    assert code == 0 and sorted(lines) == [("stderr", f"err-{i}\\n"), ("stdout", f"out-{i}\\n")], (i, lines)
client.close()
print(f"{elapsed:.2f} {len(ticks)}")
"""


@pytest.mark.parametrize("patching", ["unpatched", "patched"])
def test_twenty_concurrent_commands_run_in_parallel(fake_binary, patching):
    env = fake_binary("ok")
    result = subprocess.run(
        [sys.executable, "-c", CONCURRENCY_SCRIPT, patching, env["PYINFRA_ORBSTACK_BINARY"]],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    elapsed, ticks = result.stdout.split()
    # 20 x 0.5 s one after another would take 10 s.
    assert float(elapsed) < 3.0
    # The hub was never blocked: a 50 ms ticker kept ticking while calls waited.
    assert int(ticks) >= 8
