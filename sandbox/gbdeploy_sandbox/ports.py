"""Loopback ports for the sandbox's servers, each reserved for the life of the process that asked.

A port found free here is bound later by another program (sshd, Caddy, the stand-in service that a
deploy starts over ssh), so it must not be taken in between. Two things take ports meanwhile: the
kernel, which hands out ephemeral ports (a bind to port 0, every outgoing connection) from
`ip_local_port_range`, and the other test processes on the machine. The ports handed out here lie
below that range, where the kernel never picks one, and each is reserved by a lock on a file that
every sandbox process honours; the kernel drops the lock when the process ends."""

from __future__ import annotations

import fcntl
import itertools
import os
import random
import socket
import tempfile
from pathlib import Path

RESERVATIONS = Path(tempfile.gettempdir()) / "gbdeploy-sandbox-ports"
LOWEST = 20000
_held: list[int] = []  # the locked files' descriptors, open until the process ends


def _first_ephemeral() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A loopback port nothing listens on, handed to no other caller while this process lives."""
    highest = _first_ephemeral() - 1
    if highest < LOWEST:
        raise RuntimeError(f"ip_local_port_range starts below {LOWEST + 1}: no port is safe here")
    try:
        RESERVATIONS.mkdir()
        RESERVATIONS.chmod(0o1777)  # shared by every user's test runs
    except FileExistsError:
        pass
    start = random.randint(LOWEST, highest)
    for port in itertools.chain(range(start, highest + 1), range(LOWEST, start)):
        fd = os.open(RESERVATIONS / str(port), os.O_RDONLY | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # reserved by another process (or already by this one)
            os.close(fd)
            continue
        if _bindable(port):
            _held.append(fd)
            return port
        os.close(fd)
    raise RuntimeError(f"no loopback port free between {LOWEST} and {highest}")
