"""A deploy against OpenSSH scp, on a loopback sshd, with a real large ELF.

    python bench/deploy_bench.py [--runs 3] [--min-size-mb 140] [--skip-uploads] [--settle S]

Prints, from one run of this script, medians of `--runs` rounds in which gbdeploy and scp
alternate (so both see the same machine load, the health prober's included):

- staged deploy: the whole `gbdeploy deploy` process, as a user runs it, against `scp` of the same
  file to the same server; the downtime a health prober polling every 20 ms saw; the deploy's own
  step lines (its exchanges with the target);
- an unchanged redeploy (the same binary again), and `gbdeploy --list`;
- the upload alone against scp: over a channel of its own (`transfer.upload`, as chosen and with
  zstd forced) and through a deploy's session (`transfer.upload_through`);

with the ratios to scp and to the goals. The service is the stand-in without signal handlers
(as a Rust program without one), installed and started by gbdeploy itself before the rounds, so
a SIGTERM it inherited as ignored would show as a stop that waits for its timeout; the report
says which signals the running service ignores. `health_settle` (how long a new process must
stay healthy before its release is kept) is `--settle`, printed with the figures; the deploy is
also shown less that window, a wait the configuration asks for (default 3 s) that scp has no
counterpart of.

The sshd's sftp subsystem is Debian's default (`--sftp`), as on a real target: `scp` (SFTP since
OpenSSH 9) then starts a program through the login user's shell, as gbdeploy's far end does. The
sandbox's `internal-sftp` would spare scp that shell's start (its rc files: 0.1 to 0.4 s here).

The artifact is the stand-in service with the biggest shared library found on this machine (a
Rust or LLVM toolchain's) added as an ELF section: real machine code, compressing like a real
binary, and still a program that runs and answers health.
For a before/after comparison, run it with PYTHONPATH pointing at another checkout: the deploy
processes inherit it, and the first line printed says which gbdeploy ran. That package is byte-
compiled first, as pip does at install time: Invoke turns writing bytecode off, so a checkout run
as it is would compile every module again in every process.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import glob
import os
import pwd
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

import gbdeploy
from gbdeploy_sandbox.procs import kill_pids, pids_running
from gbdeploy_sandbox.service import build_service, service_user
from gbdeploy_sandbox.sshd import DEBIAN_SFTP, LoopbackSshd, free_port

MiB = 1 << 20
PROBE_INTERVAL = 0.02
GOALS = {"deploy/scp": 1.3, "downtime": 0.3, "unchanged": 0.8, "list": 0.25}
LIBRARY_PATTERNS = (
    "~/.rustup/toolchains/*/lib/*.so*",
    "/usr/lib/*/libLLVM*.so*",
    "/usr/lib/llvm-*/lib/*.so*",
    "/usr/lib/*/*.so*",
    "/usr/local/lib/**/*.so*",
)
STEP_LINE = re.compile(
    r"^\s*(?:→\s*)?(?P<name>[a-z][\w .-]*?)(?:\s*…\s*|:\s+)"
    r"(?:ok|FAILED|skipped|done)?[^()\n]*\((?P<seconds>\d+(?:\.\d+)?)s\)",
    re.MULTILINE,
)


# --- the artifact ---------------------------------------------------------------------------------
def big_libraries(at_least: int) -> list[Path]:
    """Shared libraries of this machine that reach `at_least` bytes: the smallest one that does
    alone (a binary near that size), else the biggest ones together."""
    found: dict[Path, int] = {}
    for pattern in LIBRARY_PATTERNS:
        for name in glob.glob(os.path.expanduser(pattern), recursive=True):
            path = Path(name).resolve()
            with contextlib.suppress(OSError):
                if path.is_file() and path.stat().st_size > 8 * MiB:
                    found[path] = path.stat().st_size
    alone = [path for path, size in found.items() if size >= at_least]
    if alone:
        return [min(alone, key=found.__getitem__)]
    chosen, total = [], 0
    for path, size in sorted(found.items(), key=lambda item: -item[1]):
        if total >= at_least:
            break
        chosen.append(path)
        total += size
    return chosen


def build_big_elf(out: Path, commit: str, libraries: list[Path]) -> Path:
    """The stand-in service built with `commit`, each library added as a section of its own."""
    build_service(out, commit)
    command = ["objcopy"]
    for number, library in enumerate(libraries):
        section = f".gbdeploy_bench_{number}"
        command += [f"--add-section={section}={library}", f"--set-section-flags={section}=noload"]
    subprocess.run([*command, str(out)], check=True)
    return out


def describe_artifact(path: Path) -> str:
    try:
        from gbdeploy.artifact import check
    except ImportError:  # a checkout from before artifact.py
        return "ELF (not checked: this gbdeploy has no artifact.check)"
    return check(path).description


# --- the target -----------------------------------------------------------------------------------
@dataclass
class World:
    sshd: LoopbackSshd
    root: Path
    project: Path
    port: int
    user: str
    settle: float = 0.25
    environment: dict[str, str] = field(default_factory=dict)

    @property
    def binary(self) -> Path:
        return self.root / "opt/gbo/bin/botserver"

    def prepare(self) -> None:
        uid = pwd.getpwnam(self.user).pw_uid
        for directory in (self.binary.parent, self.root / "opt/gbo/logs"):
            directory.mkdir(parents=True)
            os.chown(directory, uid, -1)
        self.project.mkdir(parents=True)
        config = {
            "forge": {"url": "http://127.0.0.1:9", "owner": "o", "repo": "r", "timeout": 2},
            "ssh": {"config": str(self.sshd.ssh_config)},
            "targets": {"system": {"ssh": self.sshd.alias}},
            "components": {
                "botserver": {
                    "binary": str(self.binary),
                    "user": self.user,
                    "start": "./botserver --noconsole",
                    "run_as": "runuser -u {user} --",
                    "log": str(self.root / "opt/gbo/logs/error.log"),
                    "restart": "process",
                    "health": f"http://127.0.0.1:{self.port}/health",
                    "env": {"PORT": str(self.port)},
                    "health_timeout": 30,
                    "health_settle": self.settle,
                },
                "botui": {"enabled": False},
            },
        }
        (self.project / "gbdeploy.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        self.environment = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("GBDEPLOY_", "FORGEJO_"))
        }

    def gbdeploy(self, *args: str) -> tuple[float, str]:
        """Runs the gbdeploy program as a user would; (seconds, its output)."""
        command = [sys.executable, "-m", "gbdeploy", *args]
        started = time.monotonic()
        done = subprocess.run(
            command,
            cwd=self.project,
            env=self.environment,
            capture_output=True,
            text=True,
            check=False,
        )
        seconds = time.monotonic() - started
        if done.returncode != 0:
            raise SystemExit(
                f"`gbdeploy {' '.join(args)}` exited {done.returncode}:\n{done.stdout}{done.stderr}"
            )
        return seconds, done.stdout + done.stderr

    def deploy(self, artifact: Path, commit: str) -> tuple[float, str]:
        return self.gbdeploy("deploy", "botserver", "--artifact", str(artifact), "--commit", commit)

    def answers(self) -> bool:
        url = f"http://127.0.0.1:{self.port}/health"
        try:
            with urllib.request.urlopen(url, timeout=0.5) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    def ignored_signals(self) -> str:
        """The signals the running service ignores (/proc/PID/status SigIgn), by name."""
        names = []
        for pid in pids_running(self.binary):
            status = Path(f"/proc/{pid}/status").read_text()
            mask = int(re.search(r"^SigIgn:\s*([0-9a-f]+)", status, re.MULTILINE)[1], 16)
            names += [signal.Signals(n).name for n in range(1, 65) if mask >> (n - 1) & 1]
        return ", ".join(sorted(set(names))) or "none"

    def stop_service(self) -> None:
        """Stop exactly the processes running from our binary paths (never by name)."""
        paths = [self.binary, *self.binary.parent.glob("botserver.*")]
        kill_pids([pid for path in paths for pid in pids_running(path)])


@contextlib.contextmanager
def downtime(world: World) -> Iterator[list[float]]:
    """Polls the health URL every PROBE_INTERVAL; the list receives the total downtime seen."""
    seen: list[float] = []
    stop = threading.Event()
    gaps: list[float] = []

    def poll() -> None:
        last_ok: float | None = None
        failing = False
        while not stop.is_set():
            ok = world.answers()
            now = time.monotonic()
            if ok and failing and last_ok is not None:
                gaps.append(now - last_ok)
            if ok:
                failing, last_ok = False, now
            else:
                failing = True
            stop.wait(PROBE_INTERVAL)
        if failing:
            gaps.append(float("inf"))  # it never came back

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not world.answers():
            stop.wait(PROBE_INTERVAL)
        stop.wait(3 * PROBE_INTERVAL)  # let the prober see it answer
        stop.set()
        thread.join()
        seen.append(sum(gaps))


def step_seconds(output: str) -> dict[str, float]:
    """The deploy's step lines (`→ upload … ok (0.6s)`) as {step: seconds}."""
    steps: dict[str, float] = {}
    for match in STEP_LINE.finditer(output):
        name = match["name"].strip()
        steps[name] = steps.get(name, 0.0) + float(match["seconds"])
    return steps


def scp(world: World, local: Path) -> float:
    target = world.root / "scp.bin"
    started = time.monotonic()
    subprocess.run(
        [
            "scp",
            "-q",
            "-F",
            str(world.sshd.ssh_config),
            str(local),
            f"{world.sshd.alias}:{target}",
        ],
        check=True,
    )
    seconds = time.monotonic() - started
    target.unlink()
    return seconds


# --- rounds ---------------------------------------------------------------------------------------
@dataclass
class Figures:
    deploy: list[float] = field(default_factory=list)
    scp: list[float] = field(default_factory=list)
    downtime: list[float] = field(default_factory=list)
    unchanged: list[float] = field(default_factory=list)
    unchanged_downtime: list[float] = field(default_factory=list)
    listing: list[float] = field(default_factory=list)
    steps: list[dict[str, float]] = field(default_factory=list)
    unchanged_steps: list[dict[str, float]] = field(default_factory=list)
    upload: dict[str, list[float]] = field(default_factory=dict)
    upload_scp: list[float] = field(default_factory=list)
    upload_notes: dict[str, str] = field(default_factory=dict)
    ignored: str = "?"
    settle: float = 0.0
    sftp: str = ""


def deploy_rounds(world: World, binaries: list[Path], commits: list[str], runs: int) -> Figures:
    figures = Figures(settle=world.settle)
    world.deploy(binaries[0], commits[0])  # the first install: gbdeploy starts the service
    current = 0
    for attempt in range(runs):
        order = ("gbdeploy", "scp") if attempt % 2 == 0 else ("scp", "gbdeploy")
        for who in order:
            if who == "scp":
                with downtime(world):  # the same prober load as the deploy sees
                    figures.scp.append(scp(world, binaries[0]))
                continue
            current = 1 - current
            with downtime(world) as seen:
                seconds, output = world.deploy(binaries[current], commits[current])
            figures.deploy.append(seconds)
            figures.downtime.append(seen[0])
            figures.steps.append(step_seconds(output))
        with downtime(world) as seen:
            seconds, output = world.deploy(binaries[current], commits[current])
        figures.unchanged.append(seconds)
        figures.unchanged_downtime.append(seen[0])
        figures.unchanged_steps.append(step_seconds(output))
        figures.listing.append(world.gbdeploy("--list")[0])
        figures.ignored = world.ignored_signals()
        print(f"  round {attempt + 1}/{runs} done", file=sys.stderr)
    return figures


def upload_rounds(world: World, local: Path, runs: int, figures: Figures) -> None:
    """The upload alone (in this process, connection included) against scp: over a channel of
    its own (`transfer.upload`), and through a deploy's session (`transfer.upload_through`)."""
    from gbdeploy.config import SshSettings, Target
    from gbdeploy.remote import transfer
    from gbdeploy.remote.connection import Remote

    sshd = world.sshd
    target = world.root / "upload.bin"

    def over_a_channel(remote: Remote, compress: bool | None) -> transfer.UploadResult:
        return transfer.upload(remote, local, str(target), compress=compress)

    def through_the_session(remote: Remote, compress: bool | None) -> transfer.UploadResult:
        from gbdeploy.remote.session import Session

        session = Session(remote)
        try:
            return transfer.upload_through(session, local, str(target))
        finally:
            session.close()

    ways = [
        ("scp", None, None),
        ("gbdeploy upload (as chosen)", over_a_channel, None),
        ("... zstd forced", over_a_channel, True),
    ]
    if hasattr(transfer, "upload_through"):  # not in a checkout from before it
        ways.append(("... through the session", through_the_session, None))
    for attempt in range(runs):
        for name, way, compress in ways if attempt % 2 == 0 else reversed(ways):
            if way is None:
                figures.upload_scp.append(scp(world, local))
                continue
            started = time.monotonic()
            settings = SshSettings(config=str(sshd.ssh_config))
            with Remote(Target("system", sshd.alias), settings) as remote:
                result = way(remote, compress)
            figures.upload.setdefault(name, []).append(time.monotonic() - started)
            remote_sha = getattr(result, "remote_sha256", "n/a")
            figures.upload_notes[name] = (
                f"{result.method}, {result.bytes_sent / MiB:.0f} MiB sent, "
                f"hashed on target: {'yes' if remote_sha == result.sha256 else remote_sha}"
            )
            target.unlink()


# --- report ---------------------------------------------------------------------------------------
def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def runs_text(values: list[float]) -> str:
    return " ".join(f"{value:.2f}" for value in values)


def verdict(value: float, goal: float) -> str:
    return "meets goal" if value <= goal else f"MISSES goal by {value - goal:.2f}"


def report(figures: Figures, size: int, runs: int, load: tuple[float, float]) -> None:
    scp_median = median(figures.scp)
    deploy_median = median(figures.deploy)
    ratio = deploy_median / scp_median
    print(f"\nDeploy of a {size / MiB:.0f} MiB ELF, loopback sshd, medians of {runs} rounds")
    print(f"(load average {load[0]:.2f} before, {load[1]:.2f} after; {os.cpu_count()} cores)")
    scp_goal = GOALS["deploy/scp"]
    down, unchanged, listing = (
        median(figures.downtime),
        median(figures.unchanged),
        median(figures.listing),
    )
    unsettled = [seconds - figures.settle for seconds in figures.deploy]
    unsettled_ratio = median(unsettled) / scp_median
    rows = [
        ("staged deploy, whole process", deploy_median, figures.deploy,
         f"{ratio:.2f}x scp; goal <= {scp_goal}x: {verdict(ratio, scp_goal)}"),
        (f"... less health_settle {figures.settle:g}s", median(unsettled), unsettled,
         f"{unsettled_ratio:.2f}x scp; goal <= {scp_goal}x: {verdict(unsettled_ratio, scp_goal)}"),
        ("OpenSSH scp, same file", scp_median, figures.scp,
         f"baseline (SFTP; the sshd's subsystem: {figures.sftp})"),
        ("downtime (prober, 20 ms)", down, figures.downtime,
         f"goal <= {GOALS['downtime']}s: {verdict(down, GOALS['downtime'])}"),
        ("unchanged redeploy", unchanged, figures.unchanged,
         f"goal <= {GOALS['unchanged']}s: {verdict(unchanged, GOALS['unchanged'])}; "
         f"downtime {median(figures.unchanged_downtime):.2f}s"),
        ("gbdeploy --list", listing, figures.listing,
         f"goal <= {GOALS['list']}s: {verdict(listing, GOALS['list'])}"),
    ]  # fmt: skip
    width = max(len(row[0]) for row in rows)
    for name, value, values, note in rows:
        print(f"  {name:<{width}}  {value:6.2f}s  [{runs_text(values)}]  {note}")
    print(
        f"  health_settle {figures.settle:g}s; signals the started service ignores: "
        f"{figures.ignored} (goal: no TERM)"
    )
    for title, samples in (
        ("staged deploy", figures.steps),
        ("unchanged redeploy", figures.unchanged_steps),
    ):
        names = list(dict.fromkeys(name for sample in samples for name in sample))
        cells = [f"{name} {median([s.get(name, 0.0) for s in samples]):.2f}" for name in names]
        print(f"  steps of the {title} (medians, s): " + (", ".join(cells) or "none printed"))
    if figures.upload:
        print(f"\nUpload alone, medians of {runs} (gbdeploy's time includes its ssh connect)")
        upload_scp = median(figures.upload_scp)
        print(f"  {'OpenSSH scp':<28}  {upload_scp:6.2f}s  [{runs_text(figures.upload_scp)}]")
        for name, values in figures.upload.items():
            value = median(values)
            print(
                f"  {name:<28}  {value:6.2f}s  [{runs_text(values)}]  "
                f"{value / upload_scp:.2f}x scp; {figures.upload_notes[name]}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--min-size-mb", type=int, default=140)
    parser.add_argument("--skip-uploads", action="store_true")
    parser.add_argument("--settle", type=float, default=0.25, help="health_settle, seconds")
    parser.add_argument(
        "--sftp",
        default=DEBIAN_SFTP if os.access(DEBIAN_SFTP, os.X_OK) else "internal-sftp",
        help="the sshd's sftp subsystem, which scp talks to (default: Debian's, when installed)",
    )
    options = parser.parse_args()
    package = Path(gbdeploy.__file__).parent
    print(f"gbdeploy from {package}")
    # Bytecode as an installed gbdeploy has it (pip compiles it at install time; Invoke turns
    # writing it off, so a checkout would be compiled again by every run).
    compileall.compile_dir(package, quiet=1)
    libraries = big_libraries(options.min_size_mb * MiB)
    with tempfile.TemporaryDirectory(prefix="gbdeploy-bench-") as scratch:
        directory = Path(scratch)
        directory.chmod(0o755)
        commits = ["aaaaaaa1111", "bbbbbbb2222"]
        binaries = [build_big_elf(directory / c / "botserver", c, libraries) for c in commits]
        size = binaries[0].stat().st_size
        if size < options.min_size_mb * MiB:
            raise SystemExit(
                f"only {size / MiB:.0f} MiB of shared libraries found on this machine "
                f"(need {options.min_size_mb} MiB): install a Rust or LLVM toolchain"
            )
        print(
            f"artifact: {describe_artifact(binaries[0])}, {size / MiB:.0f} MiB "
            f"(stand-in + {', '.join(p.name for p in libraries)})"
        )
        load_before = os.getloadavg()[0]
        with LoopbackSshd(directory / "sshd", sftp=options.sftp) as sshd:
            world = World(
                sshd,
                directory / "target",
                directory / "project",
                free_port(),
                service_user(),
                settle=options.settle,
            )
            world.prepare()
            try:
                figures = deploy_rounds(world, binaries, commits, options.runs)
                figures.sftp = options.sftp
                if not options.skip_uploads:
                    upload_rounds(world, binaries[0], options.runs, figures)
            finally:
                world.stop_service()
        report(figures, size, options.runs, (load_before, os.getloadavg()[0]))


if __name__ == "__main__":
    main()
