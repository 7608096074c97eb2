"""The general Linux facts (pyinfra_orbstack.facts.linux) and their deprecated
orbstack.X aliases: same commands, same answers, a warning saying where they went."""

from __future__ import annotations

import logging
import os

import pytest
from pyinfra.api.facts import FactBase

import orbstack
from conftest import pyinfra_results
from pyinfra_orbstack.facts import linux, network
from pyinfra_orbstack.facts.orbstack import OrbStackFact

GENERAL = {
    "Ping": {"target": "db"},
    "TcpPort": {"target": "db", "port": 5432},
    "Http": {"url": "http://db/"},
    "DnsLookup": {"hostname": "db", "type": "MX"},
}


@pytest.mark.parametrize("name", list(GENERAL))
def test_a_general_fact_is_named_by_its_module_not_as_an_orbstack_fact(name):
    fact = getattr(linux, name)
    assert issubclass(fact, FactBase) and not issubclass(fact, OrbStackFact)
    assert fact.name == f"pyinfra_orbstack.facts.linux.{name}"


@pytest.mark.parametrize("name", list(GENERAL))
def test_the_old_name_still_works_and_says_where_the_fact_went(name, caplog):
    alias = getattr(orbstack, name)
    assert alias is getattr(network, name)
    assert issubclass(alias, getattr(linux, name))
    assert alias.name == f"orbstack.{name}"  # pyinfra's output keys stay as they were
    with caplog.at_level(logging.WARNING, logger="pyinfra"):
        command = alias().command(**GENERAL[name])
    assert command == getattr(linux, name)().command(**GENERAL[name])
    assert f"orbstack.{name} is deprecated" in caplog.text
    assert f"pyinfra_orbstack.facts.linux.{name}" in caplog.text


def test_the_cli_finds_a_general_fact_by_its_module_path(tmp_path):
    # Any Linux host will do: @local, with no OrbStack anywhere.
    got, result = pyinfra_results(dict(os.environ), "@local", "fact",
                                  "pyinfra_orbstack.facts.linux.TcpPort", "target=127.0.0.1", "port=1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    answer = got["pyinfra_orbstack.facts.linux.TcpPort (port=1, target=127.0.0.1)"]["@local"]
    assert answer["open"] is False or answer["missing"], answer
