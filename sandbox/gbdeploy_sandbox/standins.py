"""Stand-in executables for what cannot run here: `lxc` (LXD) and `systemctl` (systemd).

The programs are modules of `gbdeploy_sandbox.programs`; `StandinWorld(directory)` writes a
launcher for each into `directory/bin` (put it first on the sshd's PATH) and keeps their state
under `directory`:

- `lxc exec NAME -- CMD…` runs CMD on this machine (env `LXC_STANDIN_CONTAINER=NAME`);
  `lxc config show NAME [--expanded]`, `lxc config device show NAME` print the YAML files of
  `containers/NAME/`; `lxc list --format csv -c n` lists the containers; `lxc file push SRC
  NAME/PATH` copies. An unknown container answers as LXD does: `Error: Instance not found`.
- `systemctl start|stop|restart|is-active|is-enabled|show -p P --value|cat UNIT`, `list-units`,
  `list-unit-files`, `list-timers` manage the units described in `units/UNIT.json`
  ({"exec_start", "user", "working_directory", "environment", "log", "enabled"}) and the timers
  in `timers/NAME.json`, starting ExecStart detached in its own session, as the unit's user, and
  stopping exactly the recorded main pid.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

# The programs every world has: executable name -> module in gbdeploy_sandbox.programs.
PROGRAMS = {
    "lxc": "lxc",
    "systemctl": "systemctl",
}


def launcher(module: str, root: Path) -> str:
    """The whole text of a stand-in executable: it runs `programs.<module>.main(root, argv)`."""
    return (
        f"#!{sys.executable}\nimport sys\n"
        f"from gbdeploy_sandbox.programs.{module} import main\n"
        f"sys.exit(main({str(root)!r}, sys.argv[1:]))\n"
    )


class StandinWorld:
    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.bin = self.directory / "bin"
        self.containers = self.directory / "containers"
        self.units = self.directory / "units"
        self.timers = self.directory / "timers"

    def install(self) -> StandinWorld:
        for path in (self.bin, self.containers, self.units, self.timers):
            path.mkdir(parents=True, exist_ok=True)
        for name, module in PROGRAMS.items():
            self.install_program(name, module)
        return self

    def install_program(self, name: str, module: str, root: Path | None = None) -> Path:
        """`bin/NAME` running `programs.<module>` with its state under `root` (default: here)."""
        return self.write_executable(name, launcher(module, root or self.directory))

    def write_executable(self, name: str, text: str) -> Path:
        """Add a stand-in executable to `bin/` (tests add e.g. `iptables` or `caddy`)."""
        path = self.bin / name
        path.write_text(text)
        path.chmod(0o755)
        return path

    def add_container(
        self, name: str, config: dict | None = None, devices: dict | None = None
    ) -> Path:
        path = self.containers / name
        path.mkdir(parents=True, exist_ok=True)
        if config is not None:
            (path / "config.yaml").write_text(yaml.safe_dump(config))
        if devices is not None:
            (path / "devices.yaml").write_text(yaml.safe_dump(devices))
        return path

    def add_unit(
        self,
        unit: str,
        *,
        exec_start: str,
        user: str = "root",
        working_directory: str = "/",
        environment: dict[str, str] | None = None,
        log: str = "/dev/null",
        enabled: bool = False,
    ) -> Path:
        spec = {
            "exec_start": exec_start,
            "user": user,
            "working_directory": working_directory,
            "environment": environment or {},
            "log": log,
            "enabled": enabled,
        }
        path = self.units / (unit if unit.endswith(".service") else f"{unit}.service")
        path = path.with_suffix(".json")
        path.write_text(json.dumps(spec, indent=2))
        return path

    def add_timer(self, timer: str, *, on_calendar: str, unit: str, enabled: bool = True) -> Path:
        """A systemd timer (`cleanup.timer`) that starts `unit` on `on_calendar`, as systemd
        normalizes it (`daily` is `*-*-* 00:00:00`)."""
        path = self.timers / f"{timer.removesuffix('.timer')}.json"
        spec = {"on_calendar": on_calendar, "unit": unit, "enabled": enabled}
        path.write_text(json.dumps(spec, indent=2))
        return path

    def unit_pid(self, unit: str) -> int | None:
        pidfile = (self.units / unit).with_suffix(".pid")
        try:
            return int(pidfile.read_text())
        except (OSError, ValueError):
            return None
