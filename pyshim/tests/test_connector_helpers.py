"""Small pieces of the connector that pyinfra relies on, checked without a machine."""

from __future__ import annotations

import base64
from io import BytesIO, StringIO

import pytest
from pyinfra.api import Config, Inventory, State
from pyinfra.api.exceptions import InventoryError
from typing_extensions import get_type_hints

from pyinfra_orbstack._commands import encode_stdin as _encode_stdin
from pyinfra_orbstack._transfers import escalation_target as _escalation_target
from pyinfra_orbstack.connector import OrbStackConnector


def decoded(stdin) -> bytes:
    return base64.b64decode(_encode_stdin(stdin))


@pytest.mark.parametrize(
    "stdin, expected",
    [
        ("one line", b"one line\n"),
        ("ends\n", b"ends\n"),
        (["a", "b\n"], b"a\nb\n"),
        (b"raw bytes", b"raw bytes\n"),
        (StringIO("x\ny"), b"x\ny\n"),
        (BytesIO(b"p\nq\n"), b"p\nq\n"),
    ],
)
def test_stdin_is_sent_the_way_pyinfra_writes_it(stdin, expected):
    assert decoded(stdin) == expected


@pytest.mark.parametrize("stdin", [None, "", b"", []])
def test_no_stdin_sends_nothing(stdin):
    assert _encode_stdin(stdin) is None


@pytest.mark.parametrize(
    "arguments, target",
    [
        ({}, None),
        ({"_sudo": False, "_sudo_user": "alice"}, None),
        ({"_sudo": True}, "root"),
        ({"_sudo": True, "_sudo_user": "alice"}, "alice"),
        ({"_doas": True}, "root"),
        ({"_su_user": "bob", "_sudo": True}, "bob"),
    ],
)
def test_escalation_target_is_the_user_the_command_ends_up_as(arguments, target):
    assert _escalation_target(arguments) == target


def test_every_connector_data_key_is_documented():
    # pyinfra raises KeyError for a key without DataMeta, and its docs generator
    # lists data_meta: both need every key.
    keys = set(get_type_hints(OrbStackConnector.data_cls))
    assert keys == set(OrbStackConnector.data_meta)
    assert all(meta.description for meta in OrbStackConnector.data_meta.values())


def test_one_machine_is_one_host_in_the_orbstack_group():
    inventory = Inventory((["@orbstack/web"], {}))
    State(inventory, Config())
    host = inventory.get_host("@orbstack/web")
    assert isinstance(host.connector, OrbStackConnector)
    assert host.data.orbstack_machine == "web"
    assert host.connector.data["orbstack_start"] is True
    assert "@orbstack" in host.groups


def test_inventory_data_chooses_user_and_workdir():
    inventory = Inventory(
        ([("@orbstack/web", {"orbstack_user": "app", "orbstack_workdir": "/srv"})], {}),
    )
    State(inventory, Config())
    data = inventory.get_host("@orbstack/web").connector.data
    assert (data["orbstack_user"], data["orbstack_workdir"]) == ("app", "/srv")


@pytest.mark.parametrize("name", ["", "a/b", ":web", "mini-1:a/b"])
def test_a_malformed_host_name_is_an_inventory_error(name):
    with pytest.raises(InventoryError, match="@orbstack/MA"):
        list(OrbStackConnector.make_names_data(name))


@pytest.mark.parametrize(("name", "mac", "machine"), [
    ("mini-1:web", "mini-1", "web"),
    ("ci@10.0.0.5:web", "ci@10.0.0.5", "web"),
    ("ssh://ci@mini-2:2222:web", "ssh://ci@mini-2:2222", "web"),
])
def test_a_machine_on_another_mac_is_named_mac_colon_machine(name, mac, machine):
    inventory = Inventory(([f"@orbstack/{name}"], {}))
    State(inventory, Config())
    host = inventory.get_host(f"@orbstack/{name}")
    assert (host.data.orbstack_machine, host.data.orbstack_mac) == (machine, mac)
    assert {"@orbstack", "orbstack_mac_" + "".join(c if c.isalnum() else "_" for c in mac)} <= set(host.groups)


def test_hosts_share_one_binary_per_mac_and_ssh_settings():
    inventory = Inventory(([
        "@orbstack/web", "@orbstack/db",
        "@orbstack/mini-1:web", "@orbstack/mini-1:db",
        ("@orbstack/mini-2:web", {"orbstack_ssh_port": 2222, "orbstack_ssh_user": "ci",
                                  "orbstack_ssh_options": {"ProxyJump": "bastion"},
                                  "orbstack_remote_binary": "/opt/homebrew/bin/pyinfra-orbstack"}),
    ], {}))
    State(inventory, Config())
    shared = {name: inventory.get_host(f"@orbstack/{name}").connector.binary.shared
              for name in ("web", "db", "mini-1:web", "mini-1:db", "mini-2:web")}
    assert shared["web"] is shared["db"] and shared["mini-1:web"] is shared["mini-1:db"]
    assert len({id(s) for s in shared.values()}) == 3
    assert shared["web"].mac_flags == ()
    assert shared["mini-1:web"].mac_flags == ("--mac", "mini-1")
    assert shared["mini-2:web"].mac_flags == (
        "--mac", "mini-2", "--ssh-port", "2222", "--ssh-user", "ci",
        "--remote-binary", "/opt/homebrew/bin/pyinfra-orbstack", "--ssh-option", "ProxyJump=bastion",
    )


def test_a_binary_without_escalated_transfers_refuses_a_sudo_put(fake_binary, tmp_path):
    # An older binary would ignore the escalation and write as the connector user.
    fake_binary("ok")  # its initialize lists no capabilities
    from pyinfra.api.connect import connect_all, disconnect_all

    inventory = Inventory((["@orbstack/fake"], {}))
    state = State(inventory, Config())
    connect_all(state)
    host = inventory.get_host("@orbstack/fake")
    try:
        with pytest.raises(OSError, match="binary is older than the Python package"):
            host.put_file(BytesIO(b"x"), str(tmp_path / "escalated"), _sudo=True)
        assert not (tmp_path / "escalated").exists()
        assert host.put_file(BytesIO(b"y"), str(tmp_path / "plain"))
        assert (tmp_path / "plain").read_bytes() == b"y"
    finally:
        disconnect_all(state)


def test_connect_waits_for_the_hosts_timeout_or_the_binarys_default_plus_grace():
    from types import SimpleNamespace

    from pyinfra_orbstack import _connect, _rpc

    binary = SimpleNamespace(default_connect_timeout=120.0)  # as initialize reports it
    grace = _rpc.TIMEOUT_GRACE_SECONDS
    assert _connect.connect_wait(binary, {"orbstack_connect_timeout": 0}) == 120 + grace
    assert _connect.connect_wait(binary, {"orbstack_connect_timeout": 5}) == 5 + grace
    # A binary that does not say: no wait of the shim's own, the binary's bounds the connect.
    assert _connect.connect_wait(SimpleNamespace(default_connect_timeout=None), {"orbstack_connect_timeout": 0}) is None
