"""Finding the Go binary, and the `pyinfra-orbstack` console script that runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import BIN
from pyinfra_orbstack import _binary


def test_env_override_wins(monkeypatch, tmp_path):
    binary = tmp_path / "pyinfra-orbstack"
    binary.write_text("#!/bin/sh\n")
    monkeypatch.setenv(_binary.BINARY_ENV_VAR, str(binary))
    assert _binary.find_binary() == str(binary)


def test_checkout_build_is_found_without_the_override(monkeypatch):
    if not (BIN / "pyinfra-orbstack").is_file():
        pytest.skip("bin/pyinfra-orbstack is not built (run `make build`)")
    if (Path(_binary.__file__).parent / "bin" / "pyinfra-orbstack").is_file():
        pytest.skip("a packaged binary is installed next to the package and takes precedence")
    monkeypatch.delenv(_binary.BINARY_ENV_VAR, raising=False)
    assert _binary.find_binary() == str(BIN / "pyinfra-orbstack")


def test_nothing_found_says_where_it_looked_and_what_to_do(monkeypatch, tmp_path):
    monkeypatch.delenv(_binary.BINARY_ENV_VAR, raising=False)
    monkeypatch.setattr(_binary, "candidate_paths", lambda: [tmp_path / "a", tmp_path / "b"])
    with pytest.raises(_binary.BinaryNotFoundError) as raised:
        _binary.find_binary()
    message = str(raised.value)
    assert str(tmp_path / "a") in message and str(tmp_path / "b") in message
    assert "make build" in message and _binary.BINARY_ENV_VAR in message


def test_console_script_runs_the_binary(real_binary):
    script = Path(sys.executable).parent / "pyinfra-orbstack"
    env = dict(os.environ, PYINFRA_ORBSTACK_BINARY=str(real_binary))
    direct = subprocess.run([str(real_binary), "version"], capture_output=True, text=True, env=env)
    via_script = subprocess.run([str(script), "version"], capture_output=True, text=True, env=env)
    assert via_script.returncode == 0, via_script.stderr
    assert via_script.stdout == direct.stdout != ""


def test_console_script_without_a_binary_exits_127(tmp_path):
    script = Path(sys.executable).parent / "pyinfra-orbstack"
    env = dict(os.environ, PYINFRA_ORBSTACK_BINARY=str(tmp_path / "missing"))
    result = subprocess.run([str(script), "version"], capture_output=True, text=True, env=env)
    assert result.returncode == 127
    assert "which is not a file" in result.stderr
