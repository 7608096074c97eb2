"""Replays testdata/protocol/*.json (format: docs/protocol.md) through the shim's RPC client.

The Go tests replay the same files frame by frame; here each request goes through
`RPCClient.call`, so the check is that the shim understands the real binary as the
examples say: results, error objects, and streamed output routed to the right call.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import gevent
import pytest

from conftest import REPO, Simulator
from pyinfra_orbstack import _rpc

EXAMPLES = sorted((REPO / "testdata" / "protocol").glob("*.json"))
ANY = "<any>"


def matches(pattern, actual) -> bool:
    if pattern == ANY:
        return True
    if isinstance(pattern, dict):
        return isinstance(actual, dict) and all(
            key in actual and matches(value, actual[key]) for key, value in pattern.items()
        )
    if isinstance(pattern, list):
        return (isinstance(actual, list) and len(pattern) == len(actual)
                and all(matches(p, a) for p, a in zip(pattern, actual)))
    return pattern == actual


pytestmark = pytest.mark.simulator("the examples' fixed machine names, in a state directory of their own")


@pytest.fixture(scope="module")
def homes(orb, tmp_path_factory):
    """One simulator state dir per set of machine names, reused across examples."""
    made: dict[frozenset, Simulator] = {}

    def for_machines(machines: dict[str, str]) -> Simulator:
        key = frozenset(machines)
        if key not in made:
            env = orb.with_knobs(ORBSIM_HOME=str(tmp_path_factory.mktemp("replay")))
            sim = Simulator(env, orb.orbctl_path, prefix="")
            for name in machines:
                result = sim.orbctl("create", "debian", name, check=False)
                if result.returncode != 0:
                    pytest.skip(f"the simulator cannot create machines here: {result.stderr.strip()}")
            made[key] = sim
        sim = made[key]
        for name, state in machines.items():
            sim.orbctl("start" if state == "running" else "stop", name)
        return sim

    yield for_machines
    for sim in made.values():
        sim.orbctl("stop", "-a", check=False)


def requests_with_expectations(exchange: list[dict]):
    """(request, [expected notifications], expected reply) triples, then an eof flag."""
    steps, index = [], 0
    while index < len(exchange):
        step = exchange[index]
        index += 1
        if "eof" in step:
            steps.append(("eof", None, None))
            continue
        request, notifications, reply = step["send"], [], None
        while index < len(exchange) and "recv" in exchange[index]:
            received = exchange[index]["recv"]
            index += 1
            if "method" in received:
                notifications.append(received)
            else:
                reply = received
                break
        steps.append((request, notifications, reply))
    return steps


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_replay(example: Path, homes, real_binary, monkeypatch):
    spec = json.loads(example.read_text())
    sim = homes(spec.get("machines", {}))
    for key, value in sim.env.items():
        if os.environ.get(key) != value:
            monkeypatch.setenv(key, value)

    client = _rpc.RPCClient([str(real_binary), "serve"])
    try:
        for request, notifications, reply in requests_with_expectations(spec["exchange"]):
            if request == "eof":
                deadline = time.monotonic() + 1
                while client.alive and time.monotonic() < deadline:
                    gevent.sleep(0.01)
                assert not client.alive, "the binary did not close its output"
                continue

            streamed: list[dict] = []
            request_id = request["id"]

            def collect(runs: list[tuple[str, str]], request_id=request_id) -> None:
                output = [{"stream": stream, "text": text} for stream, text in runs]
                streamed.append({"jsonrpc": "2.0", "method": "command.output",
                                 "params": {"request_id": request_id, "output": output}})

            try:
                result = client.call(request["method"], request.get("params"), timeout=120, on_output=collect)
                actual = {"jsonrpc": "2.0", "id": request_id, "result": result}
            except _rpc.RPCError as e:
                actual = {"jsonrpc": "2.0", "id": request_id,
                          "error": {"code": e.code, "message": e.message, "data": e.data}}

            assert matches(reply, actual), f"{request['method']}: expected {reply}, got {actual}"
            assert len(streamed) == len(notifications), (notifications, streamed)
            for expected, got in zip(notifications, streamed):
                assert matches(expected, got), (expected, got)
    finally:
        client.close()
