"""Stand-in executables for what cannot run here: `lxc` (LXD) and `systemctl` (systemd).

`StandinWorld(directory)` writes them into `directory/bin` (put it first on the sshd's PATH) and
keeps their state under `directory`:

- `lxc exec NAME -- CMD…` runs CMD on this machine (env `LXC_STANDIN_CONTAINER=NAME`);
  `lxc config show NAME [--expanded]`, `lxc config device show NAME` print the YAML files of
  `containers/NAME/`; `lxc list --format csv -c n` lists the containers; `lxc file push SRC
  NAME/PATH` copies. An unknown container answers as LXD does: `Error: Instance not found`.
- `systemctl start|stop|restart|is-active|is-enabled|show -p P --value|cat UNIT`, `list-units`
  manage the units described in `units/UNIT.json` ({"exec_start", "user", "working_directory",
  "environment", "log", "enabled"}), starting ExecStart detached in its own session, as the
  unit's user, and stopping exactly the recorded main pid.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

LXC = r"""#!{python}
import os, shutil, sys
from pathlib import Path
ROOT = Path({root!r})
args = sys.argv[1:]

def container(name):
    path = ROOT / "containers" / name
    if not path.is_dir():
        sys.stderr.write("Error: Instance not found\n")
        sys.exit(1)
    return path

if args[:1] == ["exec"]:
    name, rest = args[1], args[2:]
    container(name)
    if rest[:1] == ["--"]:
        rest = rest[1:]
    os.environ["LXC_STANDIN_CONTAINER"] = name
    os.execvp(rest[0], rest)
elif args[:2] == ["config", "show"]:
    path = container(args[2]) / "config.yaml"
    sys.stdout.write(path.read_text() if path.exists() else "config: {{}}\ndevices: {{}}\n")
elif args[:3] == ["config", "device", "show"]:
    path = container(args[3]) / "devices.yaml"
    sys.stdout.write(path.read_text() if path.exists() else "{{}}\n")
elif args[:1] == ["list"]:
    for path in sorted((ROOT / "containers").iterdir()):
        print(path.name)
elif args[:2] == ["file", "push"]:
    name, _, target = args[3].partition("/")
    container(name)
    shutil.copyfile(args[2], "/" + target)
else:
    sys.stderr.write("lxc stand-in: unsupported: %s\n" % " ".join(args))
    sys.exit(2)
"""

SYSTEMCTL = r"""#!{python}
import json, os, signal, subprocess, sys, time
from pathlib import Path
UNITS = Path({root!r}) / "units"
args = [a for a in sys.argv[1:] if a not in ("--no-pager", "--quiet", "-q")]

def load(unit):
    path = UNITS / (unit if unit.endswith(".service") else unit + ".service")
    spec = path.with_suffix(".json")
    if not spec.exists():
        sys.stderr.write("Unit %s not found.\n" % unit)
        sys.exit(5)
    return json.loads(spec.read_text()), spec.with_suffix(".pid")

def alive(pidfile):
    try:
        pid = int(pidfile.read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    try:
        state = Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None
    return None if state == "Z" else pid

def start(unit):
    spec, pidfile = load(unit)
    if alive(pidfile):
        return
    env = dict(os.environ, **spec.get("environment", {{}}))
    # Popen's start_new_session already makes the service a session leader; `setsid` is only
    # needed under runuser (and there it does not fork: its caller is no group leader). Run
    # directly, `setsid` would fork, and the recorded pid would be its exited parent.
    command = ["sh", "-c", "exec " + spec["exec_start"]]
    if spec.get("user") and spec["user"] != "root":
        command = ["runuser", "-u", spec["user"], "--", "setsid"] + command
    log = open(spec.get("log", "/dev/null"), "ab")
    process = subprocess.Popen(command, cwd=spec.get("working_directory", "/"), env=env,
                               stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                               start_new_session=True)
    pid = process.pid
    if command[0] == "runuser":
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            children = Path("/proc/%d/task/%d/children" % (pid, pid))
            kids = children.read_text().split() if children.exists() else []
            if kids:
                pid = int(kids[0])
                break
            if process.poll() is not None:
                break
            time.sleep(0.01)
    pidfile.write_text(str(pid))

def stop(unit):
    spec, pidfile = load(unit)
    pid = alive(pidfile)
    if not pid:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while alive(pidfile) and time.monotonic() < deadline:
        time.sleep(0.02)
    if alive(pidfile):
        os.kill(pid, signal.SIGKILL)

verb, units = args[0], args[1:]
if verb in ("start", "stop", "restart"):
    for unit in units:
        if verb in ("stop", "restart"):
            stop(unit)
        if verb in ("start", "restart"):
            start(unit)
elif verb == "is-enabled":
    states = ["enabled" if load(u)[0].get("enabled") else "disabled" for u in units]
    print("\n".join(states))
    sys.exit(0 if all(s == "enabled" for s in states) else 1)
elif verb == "is-active":
    states = ["active" if alive(load(u)[1]) else "inactive" for u in units]
    print("\n".join(states))
    sys.exit(0 if all(s == "active" for s in states) else 3)
elif verb == "show":
    prop = units[units.index("-p") + 1] if "-p" in units else "MainPID"
    unit = units[-1]
    spec, pidfile = load(unit)
    value = {{"MainPID": str(alive(pidfile) or 0),
              "Environment": " ".join("%s=%s" % kv for kv in spec.get("environment", {{}}).items()),
              "ExecStart": spec["exec_start"], "User": spec.get("user", "root"),
              "ActiveState": "active" if alive(pidfile) else "inactive"}}.get(prop, "")
    print(value if "--value" in units else "%s=%s" % (prop, value))
elif verb == "list-units":
    # `list-units --type=service --all --plain --no-legend`: UNIT LOAD ACTIVE SUB DESCRIPTION
    for spec in sorted(UNITS.glob("*.json")):
        unit = spec.stem + ".service"
        state = "active" if alive(spec.with_suffix(".pid")) else "inactive"
        print("%s loaded %s %s %s" % (unit, state, "running" if state == "active" else "dead",
                                      unit))
elif verb == "cat":
    spec, _ = load(units[0])
    print("[Service]")
    for key, value in spec.get("environment", {{}}).items():
        print("Environment=%s=%s" % (key, value))
    print("ExecStart=%s" % spec["exec_start"])
else:
    sys.stderr.write("systemctl stand-in: unsupported: %s\n" % " ".join(sys.argv[1:]))
    sys.exit(2)
"""


class StandinWorld:
    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.bin = self.directory / "bin"
        self.containers = self.directory / "containers"
        self.units = self.directory / "units"

    def install(self) -> StandinWorld:
        for path in (self.bin, self.containers, self.units):
            path.mkdir(parents=True, exist_ok=True)
        self.write_executable("lxc", LXC.format(python=sys.executable, root=str(self.directory)))
        self.write_executable(
            "systemctl", SYSTEMCTL.format(python=sys.executable, root=str(self.directory))
        )
        return self

    def add_program(self, name: str) -> Path:
        """Add the stand-in `gbdeploy_sandbox.programs.<name>` to `bin/` (e.g. incus, sudo)."""
        return self.write_executable(
            name,
            f"#!{sys.executable}\nimport sys\n"
            f"from gbdeploy_sandbox.programs.{name} import main\n"
            f"sys.exit(main({str(self.directory)!r}, sys.argv[1:]))\n",
        )

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

    def unit_pid(self, unit: str) -> int | None:
        pidfile = (self.units / unit).with_suffix(".pid")
        try:
            return int(pidfile.read_text())
        except (OSError, ValueError):
            return None
