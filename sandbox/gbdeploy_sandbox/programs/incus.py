"""Stand-in `incus` (the Incus client) on an Incus host, for a container reached through it.

State lives under ROOT/containers/NAME (the same directories as the `lxc` stand-in; a host runs
one of the two). Names may carry a remote, `bot:system`: its directory is `containers/bot:system`,
and a remote with no container at all answers as Incus does for a remote it does not know.

- `incus exec [REMOTE:]NAME [--] CMD…` runs CMD on this machine, stdin and exit code passed
  through, in an environment of its own as Incus gives one (PATH, HOME=/root, USER=root,
  LANG=C.UTF-8, and `INCUS_STANDIN_CONTAINER=NAME`): nothing of the caller's reaches it;
- `incus file push SRC [REMOTE:]NAME/PATH` copies SRC to /PATH;
- `incus list --format csv -c n` lists the containers.

An unknown instance answers `Error: Instance not found` with exit 1, as Incus does.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def _instance(root: Path, name: str) -> Path | None:
    path = root / "containers" / name
    if path.is_dir():
        return path
    remote, colon, _ = name.partition(":")
    if colon and not any(root.joinpath("containers").glob(f"{remote}:*")):
        sys.stderr.write(f'Error: The remote "{remote}" doesn\'t exist\n')
    else:
        sys.stderr.write("Error: Instance not found\n")
    return None


def main(root: str, argv: list[str]) -> int:
    base = Path(root)
    if argv[:1] == ["exec"] and len(argv) >= 3:
        name, command = argv[1], argv[2:]
        if command[:1] == ["--"]:
            command = command[1:]
        if _instance(base, name) is None:
            return 1
        if not command:
            sys.stderr.write("Error: A command is required\n")
            return 1
        # Nothing of the caller's environment enters an instance: Incus sets its own.
        environment = {
            "PATH": os.environ.get("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"),
            "HOME": "/root",
            "USER": "root",
            "LANG": "C.UTF-8",
            "INCUS_STANDIN_CONTAINER": name,
        }
        try:
            os.execvpe(command[0], command, environment)
        except OSError:
            sys.stderr.write(f'Error: Command not found: "{command[0]}"\n')
            return 127
    if argv[:2] == ["file", "push"] and len(argv) == 4:
        name, _, path = argv[3].partition("/")
        if _instance(base, name) is None:
            return 1
        shutil.copyfile(argv[2], "/" + path)
        return 0
    if argv[:1] == ["list"]:
        for path in sorted((base / "containers").iterdir()):
            print(path.name)
        return 0
    sys.stderr.write(f"incus stand-in: unsupported: {' '.join(argv)}\n")
    return 2
