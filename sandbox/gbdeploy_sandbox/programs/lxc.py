"""`lxc`: `exec NAME -- CMD…` runs CMD here (env `LXC_STANDIN_CONTAINER=NAME`); `config show NAME`
and `config device show NAME` print `containers/NAME/{config,devices}.yaml`; `list` lists the
containers; `file push SRC NAME/PATH` copies. An unknown container answers as LXD does."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def _container(root: Path, name: str) -> Path | None:
    path = root / "containers" / name
    if not path.is_dir():
        sys.stderr.write("Error: Instance not found\n")
        return None
    return path


def main(root: str, argv: list[str]) -> int:
    base = Path(root)
    if argv[:1] == ["exec"] and len(argv) > 2:
        name, rest = argv[1], argv[2:]
        if _container(base, name) is None:
            return 1
        if rest[:1] == ["--"]:
            rest = rest[1:]
        os.environ["LXC_STANDIN_CONTAINER"] = name
        os.execvp(rest[0], rest)
    if argv[:2] == ["config", "show"] and len(argv) > 2:
        container = _container(base, argv[2])
        if container is None:
            return 1
        path = container / "config.yaml"
        sys.stdout.write(path.read_text() if path.exists() else "config: {}\ndevices: {}\n")
        return 0
    if argv[:3] == ["config", "device", "show"] and len(argv) > 3:
        container = _container(base, argv[3])
        if container is None:
            return 1
        path = container / "devices.yaml"
        sys.stdout.write(path.read_text() if path.exists() else "{}\n")
        return 0
    if argv[:1] == ["list"]:
        for path in sorted((base / "containers").iterdir()):
            print(path.name)
        return 0
    if argv[:2] == ["file", "push"] and len(argv) > 3:
        name, _, target = argv[3].partition("/")
        if _container(base, name) is None:
            return 1
        shutil.copyfile(argv[2], "/" + target)
        return 0
    sys.stderr.write(f"lxc stand-in: unsupported: {' '.join(argv)}\n")
    return 2
