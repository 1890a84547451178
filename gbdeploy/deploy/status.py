"""`status`: what runs on each component's target, over one session per target: the binary,
its processes, health, the last deploy, any lock (with its age and how to clear it), what an
interrupted deploy left, the kept releases, and the latest CI run. `--json` prints the same."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import httpx

from ..config import Component, Settings
from ..errors import RemoteError
from ..output import Reporter, human_bytes
from ..remote import probes
from ..remote.connection import Remote, quote
from ..remote.session import Session
from . import layout
from .layout import Paths
from .state import Facts, describe_journal, inspect_command, parse_facts


@dataclass(frozen=True)
class LockInfo:
    age_seconds: int | None
    holder: dict[str, object] | None
    journal: list[dict[str, object]]
    clear: str  # the command that removes it


@dataclass(frozen=True)
class ComponentStatus:
    component: str
    target: str
    binary: probes.FileStat | None
    sha256: str | None
    processes: list[probes.ProcessInfo]
    health: probes.Health | None
    last_deploy: dict[str, object] | None
    lock: LockInfo | None
    ci: str
    interrupted: list[dict[str, object]] = field(default_factory=list)  # journal without a lock
    releases: list[dict[str, object]] = field(default_factory=list)
    ci_run: dict[str, object] | None = None  # the latest run's fields (`ci` is its line)
    # a switch component: {"live": PORT or None, "serving": {PORT: [PIDS]}}
    switch: dict[str, object] | None = None

    def problems(self) -> list[str]:
        """What a monitor should hear about: `status` exits 1 when there is any."""
        found = []
        if self.binary is None:
            found.append("the binary is missing")
        if not self.processes:
            found.append("not running")
        if self.health is not None and not self.health.ok:
            found.append(f"health NOT OK: {self.health.describe()}")
        if self.lock is not None:
            found.append("a deploy lock is held")
        elif self.interrupted:
            found.append("an interrupted deploy left its journal")
        recorded = (self.last_deploy or {}).get("sha256")
        result = (self.last_deploy or {}).get("result")
        if self.sha256 and recorded and result in ("ok", "unchanged") and recorded != self.sha256:
            found.append(
                f"the binary (sha256 {str(self.sha256)[:12]}) is not the one the last "
                f"{(self.last_deploy or {}).get('action', 'deploy')} recorded "
                f"({str(recorded)[:12]}): changed outside gbdeploy?"
            )
        return found

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["problems"] = self.problems()
        data["health"] = (
            None
            if self.health is None
            else {
                "url": self.health.url,
                "ok": self.health.ok,
                "http_status": self.health.http_status,
                "commit": self.health.commit,
                "version": self.health.version,
                "error": self.health.error,
            }
        )
        return data


def gather_status(settings: Settings, component: Component) -> ComponentStatus:
    paths = Paths(component.binary)
    target = settings.target_of(component)
    with Remote(target, settings.ssh) as remote:
        session = Session(remote)
        try:
            stat = probes.probe_stat(component.binary).run(session)
            facts: Facts = parse_facts(session.run(inspect_command(paths)).stdout)
            procs = probes.probe_processes(component.binary).run(session)
            last = probes.probe_last_line(paths.deploy_log).run(session)
            switch, on_port = _switch_state(session, component, last)
            probe = probes.health_probe(on_port)
            health = probe.run(session) if probe is not None else None
        finally:
            session.close()
        description = remote.description
        clear = f"ssh {target.ssh} {quote(remote.wrap(layout.remove_lock_command(paths)))}"
    from ..runs import latest_run

    ci_line, ci_run = latest_run(settings, component)
    lock = None
    if facts.held_age is not None or facts.holder is not None:
        lock = LockInfo(facts.held_age, facts.holder, facts.journal, clear)
    try:
        last_deploy = json.loads(last) if last else None
    except (ValueError, RecursionError):
        last_deploy = None
    if last and not isinstance(last_deploy, dict):
        last_deploy = {"unreadable": last}  # not a line gbdeploy wrote (`[1, 2]`, `null`, text)
    return ComponentStatus(
        component.name,
        description,
        stat,
        facts.current if stat else None,
        procs,
        health,
        last_deploy,
        lock,
        ci_line,
        interrupted=[] if lock else facts.journal,
        releases=[asdict(release) for release in facts.releases],
        ci_run=ci_run,
        switch=switch,
    )


def _switch_state(
    session: Session, component: Component, last: str | None
) -> tuple[dict[str, object] | None, Component]:
    """For a switch component: which port serves (and with which pids, both during a switch),
    and the component on that port (its health URL); else (None, the component)."""
    if component.switch is None:
        return None, component
    from ..switch_process import live_port, serving_ports

    try:
        recorded = (json.loads(last or "{}").get("switch") or {}).get("live")
    except (ValueError, AttributeError):
        recorded = None
    serving = serving_ports(
        lambda command: session.run(command).stdout, component.binary, component.switch.ports
    )
    live = live_port(serving, recorded)
    on_port = component.on_port(live if live is not None else component.switch.ports[0])
    return {"live": live, "serving": serving}, on_port


def latest_ci_run(
    settings: Settings, component: Component, *, transport: httpx.BaseTransport | None = None
) -> str:
    """The newest CI run of the component's workflow, where it runs, in one line; never fails
    `status`."""
    from ..runs import latest_run_line

    return latest_run_line(settings, component, transport=transport)


def run_status(
    settings: Settings, reporter: Reporter, *, component: str | None = None, as_json: bool = False
) -> list[str]:
    """Print each component's status; return its problems, `COMPONENT: what` (see
    ComponentStatus.problems)."""
    names = [settings.component(component).name] if component else sorted(settings.components)
    failures = 0
    found: list[dict[str, Any]] = []
    problems: list[str] = []
    for name in names:
        comp = settings.components[name]
        try:
            status = gather_status(settings, comp)
        except RemoteError as error:
            failures += 1
            problems.append(f"{name}: its target could not be read")
            if as_json:
                found.append({"component": name, "error": str(error)})
            else:
                reporter.say(f"{name}: cannot read its target: {error}")
            continue
        problems += [f"{name}: {problem}" for problem in status.problems()]
        if as_json:
            found.append(status.as_json())
        else:
            for line in format_status(comp, status):
                reporter.say(line)
    if as_json:
        reporter.say(json.dumps(found, indent=2, sort_keys=True, default=str))
    if failures == len(names):
        raise RemoteError("status: no target could be read", hint="see the errors above")
    return problems


def _short(value: object, length: int = 12) -> str:
    """A commit or sha256 as a table shows it (the full value is in `status --json`)."""
    return str(value)[:length] if value else "?"


def _describe_switch(switch: dict[str, object]) -> str:
    live, serving = switch.get("live"), switch.get("serving") or {}
    assert isinstance(serving, dict)
    ports = [
        f"port {port}: "
        + (f"pid {', '.join(map(str, pids))}" if pids else "free")
        + (" (live)" if port == live else "")
        for port, pids in serving.items()
    ]
    busy = [port for port, pids in serving.items() if pids]
    during = "; both serve: a switch in progress (or one that was killed)" if len(busy) > 1 else ""
    return "; ".join(ports) + during


def format_status(component: Component, status: ComponentStatus) -> list[str]:
    lines = [f"{component.name} on {status.target}"]
    if status.binary is None:
        lines.append(f"  binary   {component.binary}: MISSING")
    else:
        b = status.binary
        mtime = datetime.fromtimestamp(b.mtime, timezone.utc).isoformat(timespec="seconds")
        lines.append(
            f"  binary   {component.binary}  modified {mtime}  {human_bytes(b.size)}  "
            f"owner {b.owner}:{b.group}  mode {b.mode:o}  sha256 {_short(status.sha256, 12)}"
        )
    running = ", ".join(
        f"pid {p.pid} as {p.user}" + (" (binary replaced since it started)" if p.deleted else "")
        for p in status.processes
    )
    lines.append(f"  process  {running or 'NOT RUNNING'}")
    if status.switch is not None:
        lines.append(f"  switch   {_describe_switch(status.switch)}")
    if status.health is None:
        lines.append("  health   (no health URL configured)")
    elif status.health.ok:
        h = status.health
        lines.append(f"  health   ok  version {h.version or '?'}  commit {_short(h.commit)}")
    else:
        lines.append(f"  health   NOT OK: {status.health.describe()}")
    if status.last_deploy:
        d = status.last_deploy
        lines.append(
            f"  deployed {d.get('time', '?')}  {d.get('action', 'deploy')} "
            f"commit {_short(d.get('commit'))}  {d.get('strategy', '?')}  "
            f"result {d.get('result', '?')}  by {d.get('who', '?')}"
        )
    else:
        lines.append("  deployed (no deploy log yet)")
    if status.releases:
        kept = ", ".join(
            f"{_short(r['commit'])} ({_short(r['sha256'], 12)})" for r in status.releases
        )
        lines.append(f"  releases {kept} (newest last)")
    if status.lock:
        lock = status.lock
        held = lock.holder or {}
        age = f"{lock.age_seconds}s" if lock.age_seconds is not None else "?"
        who = (
            f"{held.get('holder', '?')} (pid {held.get('pid', '?')}), {held.get('action', '?')} "
            f"of commit {_short(held.get('commit'))}"
            if held
            else "no holder record"
        )
        lines.append(f"  LOCKED   for {age} by {who}")
        if lock.journal:
            lines.append(f"  journal  {describe_journal(lock.journal)}")
        lines.append(
            f"           if no deploy runs any more: gbdeploy deploy {component.name} --recover"
            f"  (or only clear the lock: {lock.clear})"
        )
    elif status.interrupted:
        lines.append(
            f"  journal  left by an earlier deploy: {describe_journal(status.interrupted)}"
        )
    lines.append(f"  CI       {status.ci}")
    return lines
