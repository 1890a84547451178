"""Upload speed against OpenSSH scp, and deploy downtime, on a loopback sshd.

    python bench/deploy_bench.py [--size-mb 150] [--repeat 5]

1. Uploads: for a compressible, an ELF-like (~2.5x) and a random artifact of --size-mb, each
   repetition runs OpenSSH `scp` and gbdeploy's `transfer.upload` to the same server one after the
   other (so both see the same machine load); medians are compared. gbdeploy's time includes
   opening its SSH connection, as scp's does.
2. Deploys (when `gbdeploy.deploy.run_deploy` is built): the stand-in service padded to --size-mb
   is deployed with strategy `seed` and `staged` while a thread polls its health URL; downtime is
   the time from the last answer before a gap to the first answer after it. Then the time of a
   redeploy of the binary that is already there.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import os
import pwd
import shutil
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gbdeploy import transfer
from gbdeploy.config import Settings, SshSettings, Target
from gbdeploy.connection import Remote
from gbdeploy.output import Reporter
from gbdeploy_sandbox.procs import kill_pids, pids_running
from gbdeploy_sandbox.service import build_service, service_user
from gbdeploy_sandbox.settings import standin_component, target_settings
from gbdeploy_sandbox.sshd import LoopbackSshd, free_port

MiB = 1 << 20


# --- artifacts ------------------------------------------------------------------------------------
def elf_like(out: Path, commit: str, size: int) -> Path:
    """The stand-in padded to `size` with blocks that compress about like a real ELF (~2.5x)."""
    build_service(out, commit)
    text = b"".join(f"sym_{n:06d}::frame {n * 31 % 977:04d}\n".encode() for n in range(40000))
    with open(out, "ab") as f:
        while (remaining := size - f.tell()) > 0:
            block = os.urandom(MiB * 4 // 10) + text[: MiB * 6 // 10]
            f.write(block[:remaining])
    return out


def build_artifacts(directory: Path, size: int) -> dict[str, Path]:
    return {
        "compressible": build_service(directory / "compressible", "c0ffee1", pad_to=size),
        "elf-like": elf_like(directory / "elf-like", "c0ffee2", size),
        "random": build_service(
            directory / "random", "c0ffee3", pad_to=size, compressible_padding=False
        ),
    }


# --- uploads --------------------------------------------------------------------------------------
@dataclass
class UploadRow:
    name: str
    size: int
    ours: list[float] = field(default_factory=list)
    scp: list[float] = field(default_factory=list)
    sent: int = 0
    method: str = ""


def remote_for(sshd: LoopbackSshd, **target: str | None) -> Remote:
    return Remote(Target("system", sshd.alias, **target), SshSettings(config=str(sshd.ssh_config)))


def time_scp(sshd: LoopbackSshd, local: Path, remote_path: Path) -> float:
    started = time.monotonic()
    subprocess.run(
        ["scp", "-q", "-F", str(sshd.ssh_config), str(local), f"{sshd.alias}:{remote_path}"],
        check=True,
    )
    return time.monotonic() - started


def time_upload(sshd: LoopbackSshd, local: Path, remote_path: Path) -> transfer.UploadResult:
    started = time.monotonic()
    with remote_for(sshd) as remote:
        result = transfer.upload(remote, local, str(remote_path))
    elapsed = time.monotonic() - started
    if transfer.file_sha256(remote_path) != result.sha256:
        raise SystemExit(f"BUG: {remote_path} differs from {local} after the upload")
    return dataclasses.replace(result, seconds=elapsed)


def session_start_up(sshd: LoopbackSshd) -> tuple[float, float]:
    """Median seconds to run `true` on an exec channel, and to open the SFTP subsystem."""
    execs, sftps = [], []
    with remote_for(sshd) as remote:
        remote.open()
        for _ in range(5):
            started = time.monotonic()
            remote.channel("true").recv_exit_status()
            execs.append(time.monotonic() - started)
            started = time.monotonic()
            remote.connection.client.open_sftp().close()
            sftps.append(time.monotonic() - started)
    return statistics.median(execs), statistics.median(sftps)


def bench_uploads(sshd: LoopbackSshd, artifacts: dict[str, Path], root: Path, repeat: int) -> None:
    rows = []
    for name, local in artifacts.items():
        row = UploadRow(name, local.stat().st_size)
        for attempt in range(repeat):
            pair = [("scp", root / "scp.bin"), ("ours", root / "ours.bin")]
            for who, path in pair if attempt % 2 == 0 else reversed(pair):
                if who == "scp":
                    row.scp.append(time_scp(sshd, local, path))
                else:
                    result = time_upload(sshd, local, path)
                    row.ours.append(result.seconds)
                    row.sent, row.method = result.bytes_sent, result.method
                path.unlink()
        rows.append(row)
        print(f"  {name}: done", file=sys.stderr)
    print(f"\nUpload, {repeat} runs each, medians (gbdeploy includes its connect, as scp does)")
    header = (
        f"{'artifact':<13} {'size':>9} {'method':<7} {'gbdeploy':>9} {'scp':>8} "
        f"{'gbd/scp':>7}  {'bytes sent':>10} {'of size':>7}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        ours, scp = statistics.median(row.ours), statistics.median(row.scp)
        print(
            f"{row.name:<13} {row.size / MiB:>5.0f} MiB {row.method:<7} {ours:>8.2f}s {scp:>7.2f}s "
            f"{ours / scp:>6.2f}x  {row.sent / MiB:>6.1f} MiB {100 * row.sent / row.size:>6.1f}%"
        )
    exec_start, sftp_start = session_start_up(sshd)
    print(
        f"Start-up on this server: exec channel {exec_start:.3f}s (the login shell runs its rc "
        f"files), SFTP subsystem {sftp_start:.3f}s; gbdeploy pays the first, scp the second."
    )
    print(
        "(runs, gbdeploy: "
        + "; ".join(f"{r.name} " + " ".join(f"{t:.2f}" for t in r.ours) for r in rows)
        + ")\n(runs, scp:      "
        + "; ".join(f"{r.name} " + " ".join(f"{t:.2f}" for t in r.scp) for r in rows)
        + ")"
    )


# --- deploys --------------------------------------------------------------------------------------
@dataclass
class DeployWorld:
    sshd: LoopbackSshd
    root: Path
    port: int
    user: str

    @property
    def binary(self) -> Path:
        return self.root / "opt/gbo/bin/botserver"

    def settings(self) -> Settings:
        log = self.root / "opt/gbo/logs/error.log"
        component = standin_component(self.binary, log, self.user, self.port, health_timeout=30.0)
        return target_settings(self.sshd, component)

    def deploy(self, artifact: Path, commit: str, strategy: str, *, dry_run: bool = False) -> str:
        from gbdeploy import deploy

        out = io.StringIO()
        deploy.run_deploy(
            self.settings(),
            "botserver",
            Reporter(stream=out),
            artifact=str(artifact),
            strategy=strategy,
            dry_run=dry_run,
            force=False,
            commit=commit,
        )
        return out.getvalue()

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=0.5) as r:
                return r.status == 200
        except OSError:
            return False

    def stop_service(self) -> None:
        """Stop exactly the processes running from our binary path (never by name)."""
        kill_pids(pids_running(self.binary) + pids_running(f"{self.binary}.prev"))


@contextlib.contextmanager
def health_gaps(world: DeployWorld) -> Iterator[list[float]]:
    """Polls the health URL in a thread; the yielded list receives each gap's length (s)."""
    gaps: list[float] = []
    stop = threading.Event()

    def poll() -> None:
        last_ok: float | None = None
        failing = False
        while not stop.is_set():
            ok = world.answers()
            now = time.monotonic()
            if ok:
                if failing and last_ok is not None:
                    gaps.append(now - last_ok)
                failing, last_ok = False, now
            else:
                failing = True
            stop.wait(0.005)
        if failing and last_ok is not None:
            gaps.append(float("inf"))  # never came back

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield gaps
    finally:
        # let the poller see the service answer after the deploy returned
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not world.answers():
            time.sleep(0.01)
        stop.set()
        thread.join()


def bench_deploys(sshd: LoopbackSshd, directory: Path, size: int, repeat: int) -> None:
    print(f"\nDeploy of a {size / MiB:.0f} MiB ELF-like binary (health polled every ~5 ms)")
    root = Path(tempfile.mkdtemp(prefix="gbdeploy-bench-target-"))
    root.chmod(0o755)
    world = DeployWorld(sshd, root, free_port(), service_user())
    for directory_on_target in (world.binary.parent, root / "opt/gbo/logs"):
        directory_on_target.mkdir(parents=True)
        os.chown(directory_on_target, pwd.getpwnam(world.user).pw_uid, -1)
    commits = ["aaaaaaa1111", "bbbbbbb2222"]
    try:
        binaries = {c: elf_like(directory / c / "botserver", c, size) for c in commits}
        world.deploy(binaries[commits[0]], commits[0], "staged")  # first install
        current = 0
        rows: dict[str, tuple[list[float], list[float]]] = {"seed": ([], []), "staged": ([], [])}
        runs = max(1, min(repeat, 3))
        for attempt in range(runs):
            for strategy in ("seed", "staged") if attempt % 2 == 0 else ("staged", "seed"):
                current = 1 - current
                with health_gaps(world) as gaps:
                    started = time.monotonic()
                    world.deploy(binaries[commits[current]], commits[current], strategy)
                    elapsed = time.monotonic() - started
                rows[strategy][0].append(sum(gaps))
                rows[strategy][1].append(elapsed)
        with health_gaps(world) as gaps:
            started = time.monotonic()
            output = world.deploy(binaries[commits[current]], commits[current], "staged")
            unchanged = time.monotonic() - started
        header = f"{'strategy':<22} {'downtime':>9} {'deploy time':>12}"
        print(f"{runs} runs each, medians")
        print(header)
        print("-" * len(header))
        for strategy, (downtimes, times) in rows.items():
            print(
                f"{strategy:<22} {statistics.median(downtimes):>8.2f}s "
                f"{statistics.median(times):>11.2f}s"
            )
        print(f"{'unchanged redeploy':<22} {sum(gaps):>8.2f}s {unchanged:>11.2f}s")
        skipped = [line for line in output.splitlines() if "skip" in line.lower()]
        if skipped:
            print(f"  ({skipped[0].strip()})")
    finally:
        world.stop_service()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=150)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--skip-deploy", action="store_true")
    options = parser.parse_args()
    size = options.size_mb * MiB
    with tempfile.TemporaryDirectory(prefix="gbdeploy-bench-") as scratch:
        directory = Path(scratch)
        directory.chmod(0o755)
        print(f"building artifacts of {options.size_mb} MiB …", file=sys.stderr)
        artifacts = build_artifacts(directory / "artifacts", size)
        with LoopbackSshd(directory / "sshd") as sshd:
            uploads = directory / "uploads"
            uploads.mkdir()
            print(f"loopback sshd on port {sshd.port}; {os.cpu_count()} cores", file=sys.stderr)
            bench_uploads(sshd, artifacts, uploads, options.repeat)
            if options.skip_deploy:
                print("\nDeploy: skipped (--skip-deploy)")
            else:
                bench_deploys(sshd, directory / "deploy-artifacts", size, options.repeat)


if __name__ == "__main__":
    main()
