"""Strategy `switch`: a zero-downtime deploy behind the Caddy that General Bots already runs.

    lock      as every deploy (journal, preflight, what the target has)
    upload    B.new, hashed as written (as `staged`)
    beside    B kept as B.prev, the new binary renamed over B with NOTHING stopped (the old
              process keeps running from its inode), started on the idle port (PORT, `{port}`)
    health    the strict health of the new process on the idle port: alive, its commit, settled
    proxy     on targets[switch.proxy]: back up the Caddyfile, move only the upstreams that dial
              this component's live host:port, validate beside, rename, `caddy reload`, confirm
              from Caddy's admin API that it dials the new port alone (`caddy_switch`) and,
              with `switch.site`, that the site answers the new commit through Caddy
    drain     wait until nothing is connected to the old port (at most `switch.drain` seconds)
    stop old  the processes that ran before, each by its pid (both run from the same path)
    finish    keep the release, the deploy log with `switch: {live, previous}`, unlock

Until Caddy is confirmed on the new port every failure leaves traffic where it was: the proxy's
undo puts the backup back and reloads (and checks Caddy dials the old port again), the beside
step's undo stops every process running B but the ones that ran before, and puts B.prev back.
From `switched` on (journalled) nothing is undone: the new process serves.

The journal says, for `--recover`: `placing` (both ports and the pids that ran before),
`started`, `healthy`, `switching`, `reloaded` (the backup's path), `switched`, `draining`,
`old-stopped`. A recovery decides by what Caddy runs (its admin API), not by the journal: the
port Caddy dials keeps its process, the Caddyfile is made to dial it too, every other process
running B is stopped by pid, and B is made the binary of the process that serves.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from ..caddy_switch import CaddySwitch, ProxySwitchFailed, read_file, reload
from ..caddyfile import dialled_ports
from ..config import Component, Settings
from ..errors import (
    DeployFailed,
    GbdeployError,
    PreflightError,
    RemoteError,
    RestoreFailed,
)
from ..output import Reporter
from ..remote.connection import Remote
from ..remote.probes import Health
from ..remote.session import Session
from ..switch_process import POLL, QUIET_LOOKS, drain_call, looks, parse_pids
from . import engine, layout
from .deployment import Deployment
from .engine import Step, Undo
from .service import service_of
from .words import first_line, message

IDLE_BUSY = 5  # the beside script's exit when something already listens on the idle port
SURVIVED = re.compile(r"survived SIGKILL: ?(\d+)")  # what stop_pid says of a pid it could not end


class SwitchDeployment(Deployment):
    """A deploy (or rollback, or recovery) of a component with `switch:`; see the module."""

    def __init__(self, settings: Settings, component: Component, reporter: Reporter, **kw) -> None:
        super().__init__(settings, component, reporter, **kw)
        assert component.switch is not None
        self.switch = component.switch
        self.base = component
        self.proxy = Remote(settings.targets[self.switch.proxy], settings.ssh)
        # one channel for every command on the proxy: a new one per command costs 0.65-0.9 s
        # each on a loaded 2-core machine (measured), five of them per switch
        self.proxy_session = Session(self.proxy)
        self.set_live(self.switch.ports[0])  # the plan's guess; `find_live` asks the Caddyfile
        self.old_pids: list[int] = []  # what ran B before the new one started
        self.caddy_switch: CaddySwitch | None = None
        self.proxy_error: ProxySwitchFailed | None = None
        self.switched = False  # Caddy confirmed on the new port: from here nothing is undone
        self.undo_said = ""  # what the beside undo reported
        # the proxy's undo could not see Caddy back on the old port: the new process stays
        self.traffic_stuck = False
        self.old_survivors: list[int] = []  # old pids the stop left running (after SIGKILL)

    def close(self) -> None:
        super().close()
        self.proxy_session.close()
        self.proxy.close_quietly()

    def drop_connection(self, error: BaseException | None = None) -> None:
        """Also the proxy's session and connection (an interrupt cuts it): the undo opens fresh
        ones."""
        super().drop_connection(error)
        self.proxy_session.close()
        self.proxy.close_quietly()

    def cut(self) -> None:
        super().cut()
        self.proxy.cut()

    # -- the ports
    def find_live(self) -> None:
        """The live port: the one of `switch.ports` that the Caddyfile dials for upstream_host
        (exactly one, else exit 2 with nothing changed). The new binary starts on the other."""
        text = self.read_caddyfile()
        host, ports = self.switch.upstream_host, self.switch.ports
        dialled = dialled_ports(text, host)
        live = [port for port in ports if port in dialled]
        if len(live) != 1:
            found = ", ".join(f"{host}:{port}" for port in sorted(dialled)) or "none"
            raise PreflightError(
                f"{self.base.name}: {self.switch.caddyfile} on {self.proxy.description} must "
                f"dial exactly one of {host}:{ports[0]} and {host}:{ports[1]} (it dials: "
                f"{found}); nothing was changed",
                hint=f"make its reverse_proxy for {self.base.name} dial {host}:{ports[0]}, "
                f"start {self.base.name} there, then deploy again",
            )
        self.set_live(live[0])

    def set_live(self, live: int) -> None:
        self.live, self.idle = live, self.switch.idle_port(live)
        self.component = self.base.on_port(self.idle)

    def read_caddyfile(self) -> str:
        """The Caddyfile's text; a file the proxy cannot give is the config's error (exit 2), a
        connection that fails is not (RemoteError, exit 1)."""
        result = self.proxy_session.run(read_file(self.switch.caddyfile).command, check=False)
        if not result.ok:
            said = (result.stderr.strip() or f"exit {result.exit_code}").splitlines()[-1]
            raise PreflightError(
                f"{self.base.name}: cannot read {self.switch.caddyfile} on "
                f"{self.proxy.description}: {said}; nothing was changed",
                hint=f"check components.{self.base.name}.switch.caddyfile and .proxy",
            )
        return result.stdout

    def new_caddy_switch(self, old: int, new: int) -> CaddySwitch:
        site = self.switch.site
        return CaddySwitch(
            self.switch.caddyfile,
            self.switch.upstream_host,
            old,
            new,
            caddy=self.switch.caddy,
            site_url=self.switch.site_url(self.base.health or "/") if site else None,
            site_ca=self.switch.site_ca,
        )

    # -- records
    def log_entry(self, result: str) -> dict[str, object]:
        entry = super().log_entry(result)
        live = self.idle if self.switched else self.live
        entry["switch"] = {"live": live, "previous": self.live if self.switched else None}
        return entry

    def note_command(self, record: dict[str, object]) -> str:
        """Append `record` (with its time) to the journal, while the lock is this deploy's."""
        line = json.dumps(record, sort_keys=True)
        assert line.endswith("}")
        return f"{layout.prelude(self.paths)}\n{layout.call('note', self.token, line[:-1])}"

    def note(self, record: dict[str, object]) -> None:
        self.run(self.note_command(record))

    # -- the steps
    def beside_command(self, source: str) -> str:
        """Place `source` at B with nothing stopped, and start it on the idle port. Prints
        `before PIDS` (what ran B), then `launched PID`; exits IDLE_BUSY (nothing changed) when
        something already listens on the idle port."""
        placing = json.dumps(
            {"phase": "placing", "live": self.live, "idle": self.idle}, sort_keys=True
        )
        return "\n".join(
            [
                "trap '' HUP INT TERM PIPE",
                layout.prelude(self.paths),
                layout.claim_lines("beside", self.token),
                layout.call(
                    "switch_beside",
                    self.idle,
                    IDLE_BUSY,
                    placing[:-1],
                    service_of(self.component).recipe(self.ssh_user),
                    source,
                    self.component.user + ":",
                    self.sha256 or "",
                ),
            ]
        )

    def unplace_command(self) -> str:
        """The beside step's undo, decided on the target's journal: nothing when the lock is not
        ours (`not-ours`), the switch was confirmed (`kept`) or nothing was placed
        (`untouched`); else stop every process running B but those that ran before, put B.prev
        back (`restored`, or `restore-failed`, exit 1)."""
        wait = max(1, int((self.component.stop_timeout + 60) * 10))
        return "\n".join(
            [
                "trap '' HUP INT TERM PIPE",
                layout.prelude(self.paths),
                layout.call("claim_or_wait", "beside", wait),
                layout.call("switch_undo", self.token, looks(self.component.stop_timeout)),
            ]
        )

    def beside_step(self, source: str) -> Step:
        command = self.beside_command(source)
        undo_command = self.unplace_command()

        def run() -> str:
            self.touched = True
            self.log_offset = self.log_size()
            result = self.session.run(command, check=False, timeout=60)
            out = result.stdout.splitlines()
            before = next((line for line in out if line.startswith("before")), "before")
            self.old_pids = parse_pids(before.removeprefix("before"))
            self.was_running = bool(self.old_pids)
            if result.exit_code == IDLE_BUSY:
                self.touched = False
                raise DeployFailed(
                    f"{self.base.name}: something already listens on the idle port {self.idle} "
                    f"of {self.remote.description}: nothing was changed",
                    hint=f"`gbdeploy status {self.base.name}` shows what runs; a switch that "
                    f"was killed is finished with `gbdeploy deploy {self.base.name} --recover`",
                )
            if not result.ok:
                why = (result.stderr.strip().splitlines() or [f"exit {result.exit_code}"])[-1]
                raise DeployFailed(f"starting beside failed on the target ({why})")
            launched = next((line for line in out if line.startswith("launched")), "launched ?")
            if not self.old_pids:
                return f"{launched} on port {self.idle}; nothing ran before"
            old = ", ".join(map(str, self.old_pids))
            return f"{launched} on port {self.idle}; pid {old} keeps serving port {self.live}"

        def undo() -> None:
            out = self.run_again_if_dropped(undo_command, timeout=self.component.stop_timeout + 120)
            words = out.split()
            self.undo_said = next(
                (w for w in words if w in ("not-ours", "untouched", "kept", "restored")), "?"
            )
            self.on_target = "kept" if self.undo_said == "kept" else self.undo_said
            if self.undo_said == "restored":
                self.restored = True
            elif self.undo_said == "untouched":
                self.touched = False
            elif self.undo_said == "?":
                raise RemoteError(f"the undo on the target said: {out.strip()[-300:] or '?'}")

        return Step(
            "beside",
            [command],
            run,
            Undo([undo_command], self.guard_restore(undo), restores_service=True),
            summary=f"keep B.prev, new binary renamed over {self.paths.binary} with nothing "
            f"stopped, started on the idle port (of {self.switch.ports[0]}, "
            f"{self.switch.ports[1]}: the one Caddy does not dial)",
        )

    def health_on_idle_step(self) -> Step:
        step = self.health_step()
        check = step.run

        def run() -> str:
            if self.unchanged:  # nothing was started: the live port's process is the one
                self.component = self.base.on_port(self.live)
            return check()

        step.run = run
        return step

    def proxy_step(self) -> Step:
        path, caddy = self.switch.caddyfile, self.switch.caddy
        caddy_switch = self.new_caddy_switch(self.live, self.idle)
        self.caddy_switch = caddy_switch

        def run() -> str:
            self.note({"phase": "switching", "from": self.live, "to": self.idle})
            try:
                caddy_switch.apply(self.proxy_session)
                self.note({"phase": "reloaded", "backup": caddy_switch.backup_path})
                confirmed = caddy_switch.confirm(self.proxy_session, self.unhealthy_through_site)
            except ProxySwitchFailed as error:
                self.proxy_error = error
                raise
            self.note({"phase": "switched", "live": self.idle})
            self.switched = True
            moved = len(caddy_switch.changes)
            return (
                f"{moved} upstream{'s' if moved != 1 else ''} {self.switch.upstream_host}:"
                f"{self.live} → :{self.idle}, backup {caddy_switch.backup_path}, reloaded; "
                f"{confirmed}"
            )

        def undo() -> None:
            if self.switched:
                return  # confirmed: the new process serves, nothing to put back
            error = self.proxy_error
            if caddy_switch.backup_path is None:
                return  # the Caddyfile was never changed
            if error is not None and error.restored and error.dials_new is False:
                return  # the failed reload was undone by caddy_switch and Caddy runs the old
            failed = ""
            try:
                caddy_switch.undo(self.proxy_session)
            except (ProxySwitchFailed, RemoteError) as error:
                failed = f" ({first_line(error)})"
            # Whether the new process may be stopped is what Caddy runs, not what undo said.
            dials = caddy_switch.running_dials(self.proxy_session)
            old, new = caddy_switch.dial(self.live), caddy_switch.dial(self.idle)
            if dials is None or new in dials or old not in dials:
                self.traffic_stuck = True
                raise RemoteError(
                    f"putting {caddy_switch.backup_path} back over {path} and reloading"
                    + (f" failed{failed}" if failed else " ran")
                    + ", and Caddy "
                    + (
                        "does not say which config it runs"
                        if dials is None
                        else f"dials {', '.join(sorted(dials)) or 'nothing'}"
                    )
                    + f": the new process on port {self.idle} is left running"
                )
            if failed:
                self.reporter.say(
                    f"  warning: putting the backup back failed{failed}, but Caddy runs the old "
                    f"config (it dials {old})"
                )

        return Step(
            "proxy",
            [
                read_file(path).command,
                f"(back up, write beside, caddy validate, rename: {path})",
                reload(path, caddy).command,
                "(confirm: Caddy's admin API GET /config/ dials the new port alone)",
                *(
                    [
                        f"(confirm: {caddy_switch.site_url} through Caddy on the proxy answers the "
                        "new commit)"
                    ]
                    if caddy_switch.site_url
                    else []
                ),
            ],
            run,
            Undo(
                [f"(put the backup of {path} back), {reload(path, caddy).command}"],
                self.guard_restore(undo),
                restores_service=True,
            ),
            summary=f"on {self.proxy.description}: back up {path}, move only the upstreams "
            f"dialling {self.switch.upstream_host}:<live> to <idle>, validate, rename, caddy "
            "reload, confirm from Caddy's admin API"
            + (f" and through {self.switch.site}" if self.switch.site else ""),
        )

    def unhealthy_through_site(self, answer: Health) -> str:
        """Why an answer through `switch.site` is not the new process's ("" when it is)."""
        why = self.unhealthy(answer, self.commit)
        if why and answer.ok:  # healthy, another commit: the site sends elsewhere
            return (
                f"{answer.url} answers for commit {answer.commit}, not {self.commit}: that site "
                f"does not reach the new process on port {self.idle}"
            )
        return why

    def drain_step(self) -> Step:
        command = f"{layout.prelude(self.paths)}\n{drain_call(self.live, self.switch.drain)}"

        def run() -> str:
            self.note({"phase": "draining", "port": self.live})
            return self.run(command, timeout=self.switch.drain + 60).strip()

        return Step(
            "drain",
            [command],
            run,
            summary=f"wait until nothing is connected to the old port, at most "
            f"{self.switch.drain:g}s",
        )

    def stop_old_command(self) -> str:
        """Stop each old pid (exit 1 unless each one stopped), then the phase `old-stopped`."""
        stop = layout.call("stop_old", looks(self.component.stop_timeout), *self.old_pids)
        return f"{layout.prelude(self.paths)}\n{stop}"

    def stop_old_step(self) -> Step:
        def run() -> str:
            if not self.old_pids:
                return "nothing ran before"
            result = self.session.run(
                self.stop_old_command(), check=False, timeout=self.component.stop_timeout + 60
            )
            if not result.ok:
                survived = [int(pid) for pid in SURVIVED.findall(result.stderr)]
                self.old_survivors = survived or self.old_pids
                said = (result.stderr.strip() or f"exit {result.exit_code}").splitlines()[-1]
                raise DeployFailed(f"stopping the old process failed: {said}")
            return "; ".join(result.stdout.split("\n")).strip("; ")

        return Step(
            "stop old",
            ["stop_old LOOKS PID… (each pid that ran the binary before the new one started)"],
            run,
            summary="SIGTERM each old process by its pid (never by path), SIGKILL after "
            f"{self.component.stop_timeout:g}s",
        )

    def steps(self, begin: Step, source: Step | None, skip: Callable[[Step], Step]) -> list[Step]:
        """`begin`, then `source` (the upload; None for a rollback), then the switch."""
        if source is not None:
            placed = self.paths.new
        else:
            assert self.release is not None  # a rollback: the kept release goes beside
            placed = self.paths.release(self.release.sha256)
        middle = [
            skip(self.beside_step(placed)),
            self.health_on_idle_step(),
            skip(self.proxy_step()),
            skip(self.drain_step()),
            skip(self.stop_old_step()),
        ]
        return [begin, *([source] if source is not None else []), *middle, self.finish_step()]

    # -- recovery
    def serving_port(self) -> int:
        """The port Caddy runs a config dialling (its admin API; the file when the API is off).
        RestoreFailed (exit 5) when it dials neither or both: a person must decide."""
        text = self.read_caddyfile()
        probe = self.new_caddy_switch(*self.switch.ports)
        probe.new_text = text
        running = probe.running_dials(self.proxy_session)
        if running is None:
            filed = dialled_ports(text, self.switch.upstream_host)
            serving = [port for port in self.switch.ports if port in filed]
        else:
            serving = [port for port in self.switch.ports if probe.dial(port) in running]
        if len(serving) != 1:
            raise RestoreFailed(
                f"{self.base.name}: Caddy on {self.proxy.description} dials "
                f"{' and '.join(map(str, serving)) or 'neither'} of the ports "
                f"{self.switch.ports[0]}, {self.switch.ports[1]}: recovery cannot tell which "
                "process should serve; nothing was changed",
                hint=f"make {self.switch.caddyfile} dial the port whose process is healthy, "
                f"`caddy reload`, then `gbdeploy deploy {self.base.name} --recover` again",
            )
        return serving[0]

    def keep_serving_command(self, port: int) -> str:
        """On the target, with the process serving `port` kept: the other port drained, every
        other process running B stopped by pid, B made the kept process's binary, its recipe
        for `port` in place. Prints `keep PID`, the stops, and what became of B; `serving none`
        (exit 3) when nothing of ours listens on `port`."""
        return "\n".join(
            [
                "trap '' HUP INT TERM PIPE",
                layout.prelude(self.paths),
                layout.call(
                    "keep_serving",
                    port,
                    self.switch.idle_port(port),
                    looks(self.component.stop_timeout),
                    looks(self.switch.drain),
                    QUIET_LOOKS,
                    POLL,
                    service_of(self.base.on_port(port)).recipe(self.ssh_user),
                ),
            ]
        )

    def recover_step(self) -> Step:
        def run() -> str:
            port = self.serving_port()
            self.set_live(port)
            self.component = self.base.on_port(port)  # the one kept, not a new one beside
            text = self.read_caddyfile()
            other = self.switch.idle_port(port)
            said = []
            if port not in dialled_ports(text, self.switch.upstream_host):
                back = self.new_caddy_switch(other, port)  # the file, not what Caddy runs
                back.apply(self.proxy_session, text)
                said.append(
                    f"{self.switch.caddyfile} dials :{port} again (backup {back.backup_path})"
                )
            result = self.session.run(
                self.keep_serving_command(port), check=False, timeout=self.switch.drain + 120
            )
            self.touched = True
            if "serving none" in result.stdout:
                raise RestoreFailed(
                    f"{self.base.name}: Caddy dials port {port}, where no process running "
                    f"{self.paths.binary} listens: traffic fails",
                    hint=f"start {self.base.name} on port {port} (PORT={port}), or point "
                    f"{self.switch.caddyfile} at a port that serves, then `--recover` again",
                )
            if not result.ok:
                self.restore_failed = True
                raise RestoreFailed(
                    f"{self.base.name}: recovery on the target failed: "
                    + (result.stderr.strip() or result.stdout.strip())[-300:],
                    hint=f"`gbdeploy status {self.base.name}` shows what runs",
                )
            said += [line for line in result.stdout.splitlines() if line.strip()]
            said.append(self.wait_until_up(expect=None))
            return "; ".join(said)

        return Step(
            "recover",
            [
                "(the port Caddy runs: its admin API GET /config/)",
                "keep the process on it, "
                "drain and stop every other by pid, the binary of the kept one at the path",
            ],
            run,
            summary="keep the process on the port Caddy dials, stop the other by pid, the "
            "Caddyfile and the binary at the path made to agree",
        )

    # -- how a failure is told
    def outcome(self, undone: engine.Undone) -> GbdeployError:
        if self.traffic_stuck:
            return RestoreFailed(
                f"{self.action} of {self.base.name} failed ({message(undone.error)}) and traffic "
                f"could NOT be put back on port {self.live}: {'; '.join(undone.problems)}. Both "
                f"processes run (the old one: pid "
                f"{', '.join(map(str, self.old_pids)) or 'none'}), nothing was stopped",
                hint=f"a person must act: `gbdeploy deploy {self.base.name} --recover` keeps the "
                f"process Caddy dials and stops the other once {self.switch.caddyfile} and Caddy "
                "agree (check `caddy reload` on the proxy by hand first)",
            )
        if self.old_survivors and self.on_target == "kept" and not undone.problems:
            still = ", ".join(map(str, self.old_survivors))
            return DeployFailed(
                f"{self.action} of {self.base.name}: Caddy dials port {self.idle}, where the new "
                f"binary serves and was kept (nothing was undone); but the old process still "
                f"runs: pid {still} survived SIGKILL ({message(undone.error)})",
                hint=f"Caddy sends it nothing now. On {self.remote.description}, "
                f"`ps -o pid,stat,wchan -p {still}`: state D waits in the kernel (a disk, NFS) "
                "and ends once that returns (else only a reboot ends it); then "
                f"`gbdeploy deploy {self.base.name} --recover` stops, by pid, whatever of the "
                "binary runs beside the process Caddy dials",
            )
        if undone.problems or self.restore_failed or self.on_target != "restored":
            return super().outcome(undone)
        cause = message(undone.error)
        proxy = "Caddy was not touched"
        if self.caddy_switch is not None and self.caddy_switch.backup_path is not None:
            proxy = (
                f"Caddy dials port {self.live} as before ({self.switch.caddyfile} is as it was; "
                f"backup {self.caddy_switch.backup_path})"
            )
        old = ", ".join(map(str, self.old_pids)) or "none"
        return DeployFailed(
            f"{self.action} of {self.base.name} failed ({cause}); traffic stayed where it was: "
            f"{proxy}, the old process (pid {old}) kept serving port {self.live}, the new one "
            f"was stopped and {self.paths.binary} is the old binary again",
            hint=getattr(undone.error, "hint", None) or "fix the cause above and run it again",
        )


def refuse_mismatch(component: Component, strategy: str) -> None:
    """A switch component deploys only with `--strategy switch`, and only it does (exit 2)."""
    if component.switch is not None and strategy != "switch":
        raise PreflightError(
            f"{component.name} has `switch:` (it alternates between ports "
            f"{component.switch.ports[0]} and {component.switch.ports[1]} behind Caddy): "
            f"`--strategy {strategy}` would restart it in place on a port Caddy may not dial",
            hint=f"`gbdeploy deploy {component.name} --strategy switch`",
        )
    if component.switch is None and strategy == "switch":
        raise PreflightError(
            f"`--strategy switch` needs components.{component.name}.switch (ports, proxy, "
            "caddyfile, upstream_host)",
            hint="see the README's switch section, or deploy with --strategy staged",
        )
