#!/usr/bin/env python3
"""Write one platform wheel per Go binary: the shim package plus the binary.

Stdlib only (Python >= 3.11 for tomllib), so it runs wherever goreleaser runs and
reads its metadata from pyshim/pyproject.toml, the same file the editable dev
install uses. See docs/releasing.md.

    mkwheel.py --version 1.2.4-dev.4 --out dist --binary linux_amd64=bin/pyinfra-orbstack
    mkwheel.py --version 1.2.3 --out dist --artifacts dist/artifacts.json

--binary takes a goreleaser target (darwin_arm64, linux_amd64_v1, ...) or GOOS_GOARCH.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import re
import sys
import zipfile

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    sys.exit(f"mkwheel: needs Python 3.11 or newer (for tomllib); this is {sys.version.split()[0]}. "
             "Run it with a newer python3, e.g. `make wheel PYTHON=python3.12`.")
from pathlib import Path

PYSHIM = Path(__file__).resolve().parent
PACKAGE = "pyinfra_orbstack"
# The top-level `orbstack` module gives the pyinfra CLI its `orbstack.X` fact and
# operation names (pyinfra imports a module named `orbstack` for them).
PACKAGES = [PACKAGE, "orbstack"]
BINARY_NAME = "pyinfra-orbstack"
# Inside the wheel; the shim looks here first (pyinfra_orbstack/_binary.py).
BINARY_ARCNAME = f"{PACKAGE}/bin/{BINARY_NAME}"

# Go target -> the wheel platform tags that binary serves. Go >= 1.25 links darwin
# binaries with minos 12.0; CGO_ENABLED=0 Linux binaries are static, so one binary
# serves both the glibc (manylinux2014) and the musl wheel.
PLATFORM_TAGS = {
    "darwin_arm64": ["macosx_12_0_arm64"],
    "darwin_amd64": ["macosx_12_0_x86_64"],
    "linux_amd64": ["manylinux_2_17_x86_64.manylinux2014_x86_64", "musllinux_1_2_x86_64"],
    "linux_arm64": ["manylinux_2_17_aarch64.manylinux2014_aarch64", "musllinux_1_2_aarch64"],
}

# Fixed timestamps make the same inputs give byte-identical wheels.
ZIP_DATE = (1980, 1, 1, 0, 0, 0)

_PRE_LABELS = {"alpha": "a", "a": "a", "beta": "b", "b": "b", "rc": "rc"}


class UsageError(Exception):
    """Bad input: the message says what was wrong and what to do."""


def pep440(version: str) -> str:
    """Map the semver that .ci/version and goreleaser use to a normalized PEP 440 version.

    1.2.3 -> 1.2.3, 1.2.4-dev.4 -> 1.2.4.dev4, 1.2.3-rc.1 -> 1.2.3rc1,
    1.2.3-rc.1.dev.2 -> 1.2.3rc1.dev2. A leading "v" is dropped.
    """
    m = re.fullmatch(
        r"v?(?P<release>\d+\.\d+\.\d+)"
        r"(?:-(?P<pre_l>alpha|beta|rc|a|b)\.?(?P<pre_n>\d+)?)?"
        r"(?P<devpart>[-.]dev\.?(?P<dev>\d+)?)?",
        version,
    )
    if not m:
        raise UsageError(
            f"version {version!r} cannot be mapped to a PEP 440 wheel version; "
            "use X.Y.Z, X.Y.Z-rc.N, X.Y.Z-beta.N, X.Y.Z-alpha.N or X.Y.Z-dev.N "
            "(tag releases vX.Y.Z; see docs/releasing.md)"
        )
    out = m["release"]
    if m["pre_l"]:
        out += _PRE_LABELS[m["pre_l"]] + str(int(m["pre_n"] or 0))
    if m["devpart"]:
        out += f".dev{int(m['dev'] or 0)}"
    return out


def go_target(target: str) -> str:
    """darwin_arm64, linux_amd64_v1, linux_arm64_v8.0 -> GOOS_GOARCH, or a clear error."""
    key = "_".join(target.split("_")[:2])
    if key not in PLATFORM_TAGS:
        raise UsageError(
            f"no wheel platform for Go target {target!r}; "
            f"known targets: {', '.join(sorted(PLATFORM_TAGS))}"
        )
    return key


def load_project(pyproject: Path) -> dict:
    with pyproject.open("rb") as f:
        return tomllib.load(f)["project"]


def metadata(project: dict, version: str, readme: str, license_files: list[str]) -> str:
    """Core metadata 2.4 from the [project] table (the fields pyproject.toml uses)."""
    lines = [
        "Metadata-Version: 2.4",
        f"Name: {project['name']}",
        f"Version: {version}",
        f"Summary: {project['description']}",
    ]
    for url_name, url in project.get("urls", {}).items():
        lines.append(f"Project-URL: {url_name}, {url}")
    for author in project.get("authors", []):
        if "email" in author and "name" in author:
            lines.append(f"Author-email: {author['name']} <{author['email']}>")
        elif "email" in author:
            lines.append(f"Author-email: {author['email']}")
        else:
            lines.append(f"Author: {author['name']}")
    if isinstance(project.get("license"), str):
        lines.append(f"License-Expression: {project['license']}")
    lines += [f"License-File: {name}" for name in license_files]
    if project.get("keywords"):
        lines.append(f"Keywords: {','.join(project['keywords'])}")
    lines += [f"Classifier: {c}" for c in project.get("classifiers", [])]
    if "requires-python" in project:
        lines.append(f"Requires-Python: {project['requires-python']}")
    lines += [f"Requires-Dist: {dep}" for dep in project.get("dependencies", [])]
    lines.append("Description-Content-Type: text/markdown")
    return "\n".join(lines) + "\n\n" + readme


def entry_points(project: dict) -> str:
    groups = dict(project.get("entry-points", {}))
    if project.get("scripts"):
        groups["console_scripts"] = project["scripts"]
    out = []
    for group, entries in groups.items():
        out.append(f"[{group}]")
        out += [f"{name} = {ref}" for name, ref in entries.items()]
        out.append("")
    return "\n".join(out)


def with_version(source: str, version: str) -> str:
    """_version.py as shipped: the same file with __version__ set to the wheel's version."""
    new, n = re.subn(r'(?m)^__version__\s*=.*$', f'__version__ = "{version}"', source)
    if n != 1:
        raise UsageError(f"{PACKAGE}/_version.py must have exactly one '__version__ = ...' line")
    return new


def package_files(package_dir: Path) -> list[Path]:
    files = []
    for path in sorted(package_dir.rglob("*")):
        rel = path.relative_to(package_dir)
        if path.is_dir() or "__pycache__" in rel.parts or path.suffix in (".pyc", ".pyo"):
            continue
        if rel.parts[0] == "bin":  # a dev copy of the binary; the wheel gets its own
            continue
        files.append(path)
    return files


class WheelWriter:
    """A zip with a RECORD: every member is hashed as it is written."""

    def __init__(self, path: Path):
        self.zip = zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED)
        self.record: list[str] = []

    def add(self, arcname: str, data: bytes, mode: int = 0o644) -> None:
        info = zipfile.ZipInfo(arcname, date_time=ZIP_DATE)
        info.external_attr = (0o100000 | mode) << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        self.zip.writestr(info, data)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        self.record.append(f"{arcname},sha256={digest},{len(data)}")

    def close(self, record_arcname: str) -> None:
        self.record.append(f"{record_arcname},,")
        info = zipfile.ZipInfo(record_arcname, date_time=ZIP_DATE)
        info.external_attr = 0o100644 << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        self.zip.writestr(info, "\n".join(self.record) + "\n")
        self.zip.close()


def build_wheel(binary: Path, target: str, version: str, out_dir: Path, pyshim: Path = PYSHIM) -> list[Path]:
    """Write the wheels for one Go binary; returns their paths."""
    if not binary.is_file():
        raise UsageError(f"binary {binary} does not exist; build it first (make wheel builds all of them)")
    project = load_project(pyshim / "pyproject.toml")
    wheel_version = pep440(version)
    readme_path = pyshim / project.get("readme", "README.md")
    readme = readme_path.read_text(encoding="utf-8") if readme_path.exists() else ""
    license_files = project.get("license-files", [])
    for name in license_files:
        if not (pyshim / name).is_file():
            raise UsageError(f"pyproject.toml lists license file {name!r}, which is not in {pyshim}")
    dist_name = re.sub(r"[-_.]+", "_", project["name"]).lower()
    dist_info = f"{dist_name}-{wheel_version}.dist-info"
    binary_bytes = binary.read_bytes()
    sources = [src for package in PACKAGES for src in package_files(pyshim / package)]

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for plat in PLATFORM_TAGS[go_target(target)]:
        path = out_dir / f"{dist_name}-{wheel_version}-py3-none-{plat}.whl"
        tmp = path.with_suffix(".whl.part")
        wheel = WheelWriter(tmp)
        for src in sources:
            arcname = src.relative_to(pyshim).as_posix()
            data = src.read_bytes()
            if arcname == f"{PACKAGE}/_version.py":
                data = with_version(data.decode(), wheel_version).encode()
            wheel.add(arcname, data)
        wheel.add(BINARY_ARCNAME, binary_bytes, mode=0o755)
        wheel.add(f"{dist_info}/METADATA", metadata(project, wheel_version, readme, license_files).encode())
        # A compressed tag set in the file name (a.b) is one Tag line per tag here.
        tag_lines = "".join(f"Tag: py3-none-{p}\n" for p in plat.split("."))
        wheel.add(
            f"{dist_info}/WHEEL",
            (
                "Wheel-Version: 1.0\n"
                "Generator: pyinfra-orbstack mkwheel\n"
                "Root-Is-Purelib: false\n" + tag_lines
            ).encode(),
        )
        wheel.add(f"{dist_info}/entry_points.txt", entry_points(project).encode())
        for name in license_files:
            wheel.add(f"{dist_info}/licenses/{name}", (pyshim / name).read_bytes())
        wheel.close(f"{dist_info}/RECORD")
        os.replace(tmp, path)
        written.append(path)
    return written


def binaries_from_artifacts(artifacts_json: Path) -> list[tuple[str, Path]]:
    """The Binary artifacts of goreleaser's dist/artifacts.json as (target, path)."""
    artifacts = json.loads(artifacts_json.read_text())
    found = []
    for a in artifacts:
        if a.get("type") == "Binary" and a.get("name") == BINARY_NAME:
            found.append((f"{a['goos']}_{a['goarch']}", Path(a["path"])))
    if not found:
        raise UsageError(f"{artifacts_json} lists no {BINARY_NAME} binaries; run goreleaser build first")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build pyinfra-orbstack platform wheels around Go binaries.")
    parser.add_argument("--version", required=True, help="semver from .ci/version or goreleaser's .Version")
    parser.add_argument("--out", type=Path, default=Path("dist"), help="directory for the wheels (default dist)")
    parser.add_argument("--binary", action="append", default=[], metavar="TARGET=PATH",
                        help="a Go target (darwin_arm64, linux_amd64_v1, ...) and its binary; repeatable")
    parser.add_argument("--artifacts", type=Path, help="goreleaser's dist/artifacts.json instead of --binary")
    parser.add_argument("--print-version", action="store_true",
                        help="only print the PEP 440 version --version maps to, and exit")
    args = parser.parse_args(argv)
    try:
        if args.print_version:
            print(pep440(args.version))
            return 0
        pairs = []
        for spec in args.binary:
            target, sep, path = spec.partition("=")
            if not sep or not path:
                raise UsageError(f"--binary {spec!r}: expected TARGET=PATH, e.g. linux_amd64=bin/pyinfra-orbstack")
            pairs.append((target, Path(path)))
        if args.artifacts:
            pairs += binaries_from_artifacts(args.artifacts)
        if not pairs:
            raise UsageError("nothing to do: give --binary TARGET=PATH or --artifacts dist/artifacts.json")
        for target, path in pairs:
            for wheel in build_wheel(path, target, args.version, args.out):
                print(wheel)
    except UsageError as e:
        print(f"mkwheel: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
