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

The wheel is the default `Pin`; `workflows.install` may name another source instead (a VCS URL
at a full commit, or a committed file with its sha256), and `workflows.source` this gbdeploy's
own commit at that repository (`pinned_install`). A bare name, version, branch or tag is refused.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib.metadata
import io
import json
import re
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .config import Settings
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


# --- the pinned source: what the job installs gbdeploy itself from ----------------------------

_COMMIT = r"[0-9a-f]{40}|[0-9a-f]{64}"
_VCS = re.compile(
    r"(?:(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*@\s*)?"
    r"git\+(?P<scheme>https|http|ssh|file)://(?P<rest>[^\s#'\"]+)@(?P<commit>" + _COMMIT + ")"
    r"(?:#(?P<fragment>[A-Za-z0-9_=&./-]+))?"
)
_FILE = re.compile(r"(?P<path>[A-Za-z0-9_][A-Za-z0-9_./+-]*)#sha256=(?P<sha256>[0-9a-f]{64})")


@dataclass(frozen=True)
class Pin:
    """A pinned source of gbdeploy: a pip requirement, and for a file its sha256. `wheel`: the
    wheel `gbdeploy workflows` writes beside the workflows, named with its hash in the lock."""

    requirement: str
    sha256: str | None = None  # set for a file in the repository: checked before pip sees it
    why: str = ""  # how an automatic pin was found, for the report
    kind: Literal["wheel", "vcs", "file"] = "vcs"

    @property
    def url(self) -> str:
        """The repository URL of a VCS pin (what `git ls-remote` checks)."""
        found = _VCS.search(self.requirement)
        return f"{found['scheme']}://{found['rest']}" if found else ""


def parse_pin(value: str, key: str = "workflows.install") -> Pin:
    """`git+URL@<full commit>` (optionally `gbdeploy @ …`), or `PATH#sha256=<hex>` of a file in
    the repository; anything else (a bare name, a version, a branch or tag) is refused."""
    value = value.strip()
    if _VCS.fullmatch(value):
        return Pin(value)
    found = _FILE.fullmatch(value)
    if found:
        path = found["path"]
        if ".." in path.split("/") or path.startswith("/"):
            raise ConfigError(key, f"the file must be inside the repository, got {path!r}")
        return Pin(path, found["sha256"], kind="file")
    raise ConfigError(
        key,
        f"{value!r} is not a pinned source: a name (or a version, branch or tag) is whatever is "
        "published under it when the job runs, and the job holds the production deploy key",
        hint="use git+https://HOST/OWNER/gbdeploy.git@<40-hex commit>, or a wheel committed in "
        "the repository as PATH#sha256=<its sha256> (or leave it empty: the commit this gbdeploy "
        "the wheel `gbdeploy workflows` writes beside the workflows)",
    )


def pinned_install(settings: Settings) -> Pin:
    """`workflows.install` checked; when empty, the wheel of this gbdeploy that `gbdeploy
    workflows` writes beside the workflows (`install_lock`), or with `workflows.source` set the
    commit this gbdeploy was installed from (PEP 610 `direct_url.json`, or the git clone it runs
    from) at that repository."""
    if settings.workflows.install:
        return parse_pin(settings.workflows.install)
    if not settings.workflows.source:
        return Pin(LOCK_FILE, kind="wheel", why=f"this gbdeploy as a wheel in {INSTALL_DIR}/")
    source = settings.workflows.source
    commit, where = _own_commit()
    if commit is None:
        raise ConfigError(
            "workflows.install",
            f"is empty and this gbdeploy's commit cannot be found ({where})",
            hint="set it to git+URL@<40-hex commit> or PATH#sha256=<hex>",
        )
    source = source.removeprefix("git+")
    pin = parse_pin(f"gbdeploy @ git+{source}@{commit}", "workflows.source")
    return Pin(pin.requirement, why=f"the commit this gbdeploy {where}")


def _own_commit() -> tuple[str | None, str]:
    """This gbdeploy's commit and how it was found."""
    directory = Path(__file__).resolve().parent.parent
    try:
        text = importlib.metadata.distribution("gbdeploy").read_text("direct_url.json")
    except importlib.metadata.PackageNotFoundError:
        text = None
    data = json.loads(text) if text else {}
    vcs = data.get("vcs_info") or {}
    commit = str(vcs.get("commit_id", ""))
    if vcs.get("vcs") == "git" and re.fullmatch(_COMMIT, commit):
        return commit, f"installed from {data.get('url', '')}"
    url = str(data.get("url", ""))
    if url.startswith("file://") and not (directory / "pyproject.toml").is_file():
        directory = Path(url.removeprefix("file://"))
    if not (directory / "pyproject.toml").is_file():
        return None, "installed without VCS information"
    head = subprocess.run(
        ["git", "-C", str(directory), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    if head.returncode != 0 or not re.fullmatch(_COMMIT, head.stdout.strip()):
        return None, f"{directory} is not a git clone"
    changed = subprocess.run(
        ["git", "-C", str(directory), "status", "--porcelain", "--", "gbdeploy", "pyproject.toml"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    uncommitted = "; its uncommitted changes are NOT in the jobs" if changed else ""
    return head.stdout.strip(), f"runs from ({directory}, HEAD{uncommitted})"
