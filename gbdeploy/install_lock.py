"""What a CI job installs gbdeploy from, pinned end to end, without anyone publishing it.

`gbdeploy workflows` writes `.forgejo/gbdeploy/` beside the workflows of each repository that
runs one: a wheel of this very gbdeploy and `requirements.txt`, in which every distribution the
job installs (the wheel and each dependency, at the version installed here) is pinned by its
sha256. The job runs `pip install --require-hashes --only-binary :all: -r requirements.txt`:
a name someone else publishes, a changed file or a missing pin stops the install.

The wheel is built here from the package's own files with fixed timestamps, so rendering the
same code twice writes the same bytes. The dependency hashes are those of the wheels pip
downloads for them (pip's ordinary client and index configuration), for this machine's platform
and Python: render on the runner's kind of machine (Linux, the runner's Python).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib.metadata
import io
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from .errors import ConfigError

INSTALL_DIR = ".forgejo/gbdeploy"
LOCK_FILE = f"{INSTALL_DIR}/requirements.txt"
_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can carry: reproducible wheels


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def _metadata(distribution: importlib.metadata.Distribution) -> str:
    """The wheel's METADATA: name, version and the run-time requirements (no extras)."""
    meta = distribution.metadata
    lines = ["Metadata-Version: 2.1", f"Name: {meta['Name']}", f"Version: {meta['Version']}"]
    if meta["Requires-Python"]:
        lines.append(f"Requires-Python: {meta['Requires-Python']}")
    for requirement in meta.get_all("Requires-Dist") or []:
        if "extra ==" not in requirement:
            lines.append(f"Requires-Dist: {requirement}")
    return "\n".join(lines) + "\n"


@functools.cache
def build_wheel() -> tuple[str, bytes]:
    """(file name, bytes) of a py3-none-any wheel of the gbdeploy package this code runs from."""
    package = Path(__file__).resolve().parent
    distribution = importlib.metadata.distribution("gbdeploy")
    version = distribution.version
    info = f"gbdeploy-{version}.dist-info"
    files: dict[str, bytes] = {}
    for path in sorted(package.rglob("*")):
        # the modules, and the far end's files sent to targets (pyproject's package-data)
        if path.suffix in (".py", ".sh") and "__pycache__" not in path.parts:
            files[f"gbdeploy/{path.relative_to(package).as_posix()}"] = path.read_bytes()
    files[f"{info}/METADATA"] = _metadata(distribution).encode()
    files[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: gbdeploy\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    entry_points = distribution.read_text("entry_points.txt")
    if entry_points:
        files[f"{info}/entry_points.txt"] = entry_points.encode()
    record = "".join(f"{name},{_record_hash(data)},{len(data)}\n" for name, data in files.items())
    files[f"{info}/RECORD"] = (record + f"{info}/RECORD,,\n").encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as wheel:
        for name, data in files.items():
            entry = zipfile.ZipInfo(name, _EPOCH)
            entry.external_attr = 0o644 << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            wheel.writestr(entry, data)
    return f"gbdeploy-{version}-py3-none-any.whl", buffer.getvalue()


def _installed_versions() -> str:
    """Constraints `name==version` for every distribution installed here: the job gets what
    this gbdeploy was tested with."""
    lines = set()
    for distribution in importlib.metadata.distributions():
        name = distribution.metadata["Name"]
        if name and name.lower() != "gbdeploy":
            lines.add(f"{name}=={distribution.version}")
    return "\n".join(sorted(lines)) + "\n"


@functools.cache
def dependency_pins(wheel_name: str, wheel: bytes) -> tuple[str, ...]:
    """`name==version --hash=sha256:…` for every dependency of the wheel, from the wheels pip
    downloads for them."""
    with tempfile.TemporaryDirectory(prefix="gbdeploy-lock-") as temp:
        directory = Path(temp)
        (directory / wheel_name).write_bytes(wheel)
        (directory / "constraints.txt").write_text(_installed_versions())
        downloaded = directory / "wheels"
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-input",
                "--disable-pip-version-check",
                "--only-binary=:all:",
                "--dest",
                str(downloaded),
                "--constraint",
                str(directory / "constraints.txt"),
                str(directory / wheel_name),
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
        if result.returncode != 0:
            said = (result.stderr.strip().splitlines() or ["no message"])[-1]
            raise ConfigError(
                "workflows.install",
                f"cannot lock gbdeploy's dependencies: pip download failed ({said})",
                hint="check that pip can reach its package index from here, or set "
                "workflows.install to a pinned source",
            )
        pins = []
        for path in sorted(downloaded.glob("*.whl")):
            if path.name == wheel_name:
                continue
            name, version = path.name.split("-")[:2]
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            pins.append(f"{_canonical(name)}=={version} --hash=sha256:{digest}")
        return tuple(pins)


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def install_files(*, with_wheel: bool) -> dict[str, bytes]:
    """Path inside the repository → content of the files the rendered install step reads: the
    lock (and the wheel it names, `with_wheel`; else the job installs gbdeploy from its pin and
    the lock holds only its dependencies)."""
    wheel_name, wheel = build_wheel()
    lines = [
        "# Written by `gbdeploy workflows`: every distribution the CI job installs, pinned by",
        "# sha256 (pip install --require-hashes). Do not edit: render again.",
    ]
    files: dict[str, bytes] = {}
    if with_wheel:
        digest = hashlib.sha256(wheel).hexdigest()
        lines.append(f"./{INSTALL_DIR}/{wheel_name} --hash=sha256:{digest}")
        files[f"{INSTALL_DIR}/{wheel_name}"] = wheel
    lines.extend(dependency_pins(wheel_name, wheel))
    files[LOCK_FILE] = ("\n".join(lines) + "\n").encode()
    return files
