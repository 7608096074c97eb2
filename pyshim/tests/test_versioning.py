"""One version from the git tag: .ci/version (semver, for the Go binary) and the
PEP 440 version mkwheel.py gives the wheel must name the same release."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.version import Version

from conftest import REPO

pytest.importorskip("tomllib", reason="mkwheel, the wheel builder, needs Python 3.11 or newer")
sys.path.insert(0, str(REPO / "pyshim"))
import mkwheel  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


@pytest.fixture()
def repo(tmp_path):
    """A scratch git repo holding a copy of .ci/version."""
    (tmp_path / ".ci").mkdir()
    shutil.copy(REPO / ".ci" / "version", tmp_path / ".ci" / "version")

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path,
                       check=True, capture_output=True)

    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "one")

    def version() -> str:
        return subprocess.run([str(tmp_path / ".ci" / "version")], capture_output=True, text=True,
                              check=True).stdout.strip()

    return tmp_path, git, version


def test_version_follows_tags_commits_and_dirt(repo):
    path, git, version = repo
    assert version() == "0.0.0-dev.1"

    git("tag", "v1.2.3")
    assert version() == "1.2.3"

    (path / "x").write_text("x")
    git("add", "x")
    assert version() == "1.2.4-dev.0", "uncommitted changes on a tag are not that release"
    git("commit", "-q", "-m", "two")
    assert version() == "1.2.4-dev.1"

    git("tag", "v1.3.0-rc.1")
    assert version() == "1.3.0-rc.1"
    git("commit", "-q", "--allow-empty", "-m", "three")
    assert version() == "1.3.0-rc.1.dev.1"


@pytest.mark.parametrize("semver, wheel", [
    ("1.2.3", "1.2.3"),
    ("1.2.4-dev.4", "1.2.4.dev4"),
    ("0.0.0-dev.12", "0.0.0.dev12"),
    ("1.3.0-rc.1", "1.3.0rc1"),
    ("1.3.0-rc.1.dev.2", "1.3.0rc1.dev2"),
    ("2.0.0-beta.3", "2.0.0b3"),
])
def test_wheel_version_is_the_normalized_pep440_of_the_tag(semver, wheel):
    assert mkwheel.pep440(semver) == wheel
    assert Version(semver) == Version(wheel), "pip must see the binary's version as the same release"
    assert str(Version(wheel)) == wheel, "wheel file names need the normalized form"


def test_goreleaser_snapshot_versions_are_refused_with_a_hint():
    with pytest.raises(mkwheel.UsageError, match="docs/releasing.md"):
        mkwheel.pep440("1.2.3-SNAPSHOT-abc1234")


def test_built_wheel_carries_its_version_and_the_checkout_stays_clean(tmp_path):
    version_file = REPO / "pyshim" / "pyinfra_orbstack" / "_version.py"
    before = version_file.read_text()
    binary = tmp_path / "pyinfra-orbstack"
    binary.write_bytes(b"\x7fELF stand-in; this test reads metadata only")

    wheels = mkwheel.build_wheel(binary, "linux_arm64", "1.2.4-dev.4", tmp_path / "dist")

    assert [w.name for w in wheels] == [
        "pyinfra_orbstack-1.2.4.dev4-py3-none-manylinux_2_17_aarch64.manylinux2014_aarch64.whl",
        "pyinfra_orbstack-1.2.4.dev4-py3-none-musllinux_1_2_aarch64.whl",
    ]
    with zipfile.ZipFile(wheels[0]) as z:
        assert '__version__ = "1.2.4.dev4"' in z.read("pyinfra_orbstack/_version.py").decode()
        meta = z.read("pyinfra_orbstack-1.2.4.dev4.dist-info/METADATA").decode()
        assert "\nVersion: 1.2.4.dev4\n" in meta
        assert "\nRequires-Dist: pyinfra>=3.8,<4\n" in meta
        assert "Description-Content-Type: text/markdown" in meta
    assert version_file.read_text() == before


def test_release_notes_come_from_the_changelog_section_of_the_tag(tmp_path):
    (tmp_path / ".ci").mkdir()
    shutil.copy(REPO / ".ci" / "release-notes", tmp_path / ".ci" / "release-notes")
    (tmp_path / "CHANGELOG.md").write_text(
        "# Changelog\n\n## [Unreleased]\n\n## [1.2.3] - 2026-11-26\n\n### Fixed\n\n- a bug\n\n"
        "## [1.2.2] - 2026-11-01\n\n- older\n\n[1.2.3]: https://example.invalid/compare\n"
    )
    notes = tmp_path / ".ci" / "release-notes"

    tagged = subprocess.run([str(notes), "v1.2.3"], capture_output=True, text=True)
    missing = subprocess.run([str(notes), "1.2.4"], capture_output=True, text=True)
    empty = subprocess.run([str(notes), "Unreleased"], capture_output=True, text=True)

    assert tagged.returncode == 0, tagged.stderr
    assert tagged.stdout == "### Fixed\n\n- a bug\n"
    assert missing.returncode != 0
    assert 'no "## [1.2.4]" section' in missing.stderr and "before tagging v1.2.4" in missing.stderr
    assert empty.returncode != 0, "a release with no notes is refused"
