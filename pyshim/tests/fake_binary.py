"""A stand-in for `pyinfra-orbstack serve`, for failures the real binary won't produce on demand.

It speaks the protocol of docs/protocol.md; "machines" are the local machine, so
commands run with the local `sh`. FAKE_MODE picks a misbehaviour:

- ``ok``: behave.
- ``die_on_run``: print one line of output for `command.run`, then exit abruptly.
- ``die_with_child``: like ``die_on_run``, but a grandchild keeps stdout open.
- ``silent_on_run``: never answer `command.run` (but honour `$/cancelRequest`).
- ``garbage``: answer `initialize`, then write bytes that are not a frame.
- ``start_fails``: `machine.connect` fails as a failed `orbctl start` does.
- ``split_runs``: send output 3 characters per notification, cutting lines
  (docs/protocol.md lets a run end anywhere in a line).

FAKE_PROTOCOL_VERSION overrides the protocol version it claims.
FAKE_MACHINES is a comma-separated list of machine names that exist (default "fake").
"""

from __future__ import annotations

import base64
import codecs
import json
import os
import shutil
import subprocess
import sys
import threading

MODE = os.environ.get("FAKE_MODE", "ok")
PROTOCOL_VERSION = int(os.environ.get("FAKE_PROTOCOL_VERSION", "2"))
MACHINES = [m for m in os.environ.get("FAKE_MACHINES", "fake").split(",") if m]

out = sys.stdout.buffer
write_lock = threading.Lock()
cancel_events: dict[int, threading.Event] = {}


def send(message: dict) -> None:
    body = json.dumps(message).encode()
    with write_lock:
        out.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        out.flush()


def reply(request_id, result=None, error=None) -> None:
    message = {"jsonrpc": "2.0", "id": request_id}
    if error is not None:
        message["error"] = error
    else:
        message["result"] = result
    send(message)


def machine(name: str) -> dict:
    return {
        "name": name, "id": "01FAKE" + name.upper(), "state": "running", "distro": "debian",
        "version": "bookworm", "arch": "amd64", "variant": "default", "default_user": "root",
        "isolated": False, "ip4": "198.19.249.9", "ip6": "", "disk_size": None,
    }


def run_command(request_id: int, params: dict) -> None:
    if MODE in ("die_on_run", "die_with_child"):
        send({"jsonrpc": "2.0", "method": "command.output",
              "params": {"request_id": request_id, "output": [{"stream": "stdout", "text": "started\n"}]}})
        if MODE == "die_with_child":
            subprocess.Popen(["sleep", "5"], stdout=sys.stdout, stderr=subprocess.DEVNULL)
        sys.stderr.write("fake: dying now\n")
        sys.stderr.flush()
        os._exit(3)
    if MODE == "silent_on_run":
        cancel_events[request_id].wait()
        reply(request_id, error={"code": -32800, "message": "cancelled", "data": {"kind": "cancelled"}})
        return

    proc = subprocess.Popen(
        ["sh", "-c", params["command"]], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, cwd=params.get("workdir") or None,
    )
    stdin = base64.b64decode(params.get("stdin_b64") or "")

    def pump(stream, name):
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        while True:
            raw = os.read(stream.fileno(), 65536)
            text = decoder.decode(raw, final=not raw)
            size = 3 if MODE == "split_runs" else len(text)
            for i in range(0, len(text), size or 1):
                send({"jsonrpc": "2.0", "method": "command.output",
                      "params": {"request_id": request_id, "output": [{"stream": name, "text": text[i:i + size]}]}})
            if not raw:
                return

    pumps = [threading.Thread(target=pump, args=(proc.stdout, "stdout")),
             threading.Thread(target=pump, args=(proc.stderr, "stderr"))]
    for t in pumps:
        t.start()
    proc.stdin.write(stdin)
    proc.stdin.close()
    try:
        code = proc.wait(timeout=params.get("timeout") or None)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        for t in pumps:
            t.join()
        reply(request_id, error={"code": -32005, "message": "timed out", "data": {"kind": "timeout"}})
        return
    for t in pumps:
        t.join()
    reply(request_id, {"exit_code": code})


def handle(message: dict) -> None:
    method, request_id, params = message.get("method"), message.get("id"), message.get("params") or {}
    if method == "$/cancelRequest":
        event = cancel_events.get(params.get("id"))
        if event:
            event.set()
        return
    if method == "initialize":
        if params.get("protocol_version") != PROTOCOL_VERSION:
            reply(request_id, error={"code": -32009, "message": "protocol mismatch", "data": {
                "kind": "protocol_mismatch", "binary_protocol_version": PROTOCOL_VERSION,
                "client_protocol_version": params.get("protocol_version")}})
            return
        reply(request_id, {"protocol_version": PROTOCOL_VERSION, "binary_version": "0.0.0-fake",
                           "capabilities": [], "orbctl": {"path": "/fake/orbctl", "found": True}})
        if MODE == "garbage":
            with write_lock:
                out.write(b"this is not a frame\r\n\r\n")
                out.flush()
        return
    if method == "machine.connect":
        name = params["machine"]
        if name not in MACHINES:
            reply(request_id, error={"code": -32003, "message": f"machine not found: '{name}'", "data": {
                "kind": "machine_not_found", "machine": name, "available": MACHINES}})
            return
        if MODE == "start_fails":
            message = f"[-32098] start '{name}': simulated failure"
            reply(request_id, error={"code": -32006, "message": message, "data": {
                "kind": "orbctl_failed", "orbctl_args": ["start", name], "orbctl_stderr": message,
                "exit_code": 1}})
            return
        reply(request_id, {"machine": machine(name), "started": False, "created": False})
        return
    if method == "command.run":
        cancel_events[request_id] = threading.Event()
        threading.Thread(target=run_command, args=(request_id, params), daemon=True).start()
        return
    if method in ("file.put", "file.get"):
        src, dst = ((params["local_path"], params["remote_path"]) if method == "file.put"
                    else (params["remote_path"], params["local_path"]))
        try:
            shutil.copyfile(src, dst + ".part")
            os.replace(dst + ".part", dst)
        except OSError as e:
            reply(request_id, error={"code": -32008, "message": str(e), "data": {"kind": "io_error"}})
            return
        reply(request_id, {"size": os.path.getsize(dst)})
        return
    if method == "shutdown":
        reply(request_id, None)
        os._exit(0)
    reply(request_id, error={"code": -32601, "message": f"method not found: {method}"})


def main() -> None:
    stdin = sys.stdin.buffer
    while True:
        length = None
        while True:
            line = stdin.readline()
            if not line:
                return
            if not line.strip():
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        handle(json.loads(stdin.read(length)))


if __name__ == "__main__":
    main()
