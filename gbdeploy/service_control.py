"""`start|stop|restart COMPONENT` and `exec COMPONENT -- CMD…`: the service alone.

start/stop/restart run under the deploy lock (taken, preflighted and freeze-checked exactly as a
deploy takes it) and through the deploy's own stop (`service.py`) and start (`launch` of
the recipe the current config gives, then kept as the binary's), then check health as a deploy
does. They change no binary and write no deploy log entry; the journal records their phases, so
one that is killed shows in the next deploy's lock message. A `start` of a service that already
runs starts nothing and checks health.
"""

from __future__ import annotations

import sys

from .config import Component, Settings, token_values
from .deploy import engine, layout
from .deploy.deployment import Deployment
from .deploy.engine import Command, Step, Undo
from .deploy.service import run_as_prefix, service_of
from .deploy.words import first_line, message
from .errors import DeployFailed, GbdeployError, RemoteError, UsageError, redact
from .output import Reporter
from .remote.connection import Remote, quote

ACTIONS = ("start", "stop", "restart")


def service_script(deployment: Deployment, action: str) -> str:
    """The stop and/or start, one script, with the deploy's phases in its journal. Prints the
    stop's outcome (`none`, `stopped PIDS`, `killed PIDS`), `already-running`, or `launched PID`;
    exits 3 when the stop or the start failed."""
    component = deployment.component
    lines = [
        "trap '' HUP INT TERM PIPE",  # once begun it finishes; `launch` resets them for the service
        layout.prelude(deployment.paths),
    ]
    if action in ("stop", "restart"):
        lines += [layout.stop_function(component), "control_stop"]
    if action == "start":
        lines += [service_of(component).running_lines(), "start_unless_running"]
    if action in ("start", "restart"):
        recipe = service_of(component).recipe(deployment.ssh_user)
        lines.append(layout.call("control_start", recipe))
    return "\n".join(lines)


def control_steps(deployment: Deployment, action: str) -> list[Step]:
    begin = deployment.begin_step(upload=False, machine_of=None)
    begin.undo = Undo([deployment.unlock], lambda: _unlock(deployment))
    begin.summary = (
        f"take {deployment.paths.lock} (atomic) as a deploy does, preflight, freeze check"
    )
    take = begin.run

    def take_lock() -> str | None:
        try:
            return take()
        except BaseException:
            if not deployment.facts.acquired or deployment.facts.released:
                begin.undo = None  # refused: held by another, frozen, or given back already
            raise

    begin.run = take_lock
    script = Command(action, lambda: service_script(deployment, action))
    state: dict[str, str] = {}

    def service() -> str:
        deployment.touched = True
        if action != "stop":
            deployment.log_offset = deployment.log_size()
        result = deployment.exchange(script, timeout=deployment.component.stop_timeout + 60)
        state["out"] = result.stdout
        if not result.ok:
            why = (result.stderr.strip() or result.stdout.strip() or "?").splitlines()[-1]
            raise DeployFailed(
                f"{action} of {deployment.component.name} failed on "
                f"{deployment.remote.description}: {why}"
                + (deployment.log_tail() if action != "stop" else "")
            )
        return (
            service_of(deployment.component).detail(result.stdout, started=action != "stop")
            or "done"
        )

    steps = [
        begin,
        Step(action, [script], service, summary=_SUMMARY[action]),
    ]
    if action == "stop":
        steps.append(Step("check", [deployment.state_check], lambda: _check_stopped(deployment)))
    else:
        steps.append(deployment.health_step())
    steps.append(
        Step("unlock", [deployment.unlock], lambda: _unlock(deployment) or "lock released")
    )
    return steps


_SUMMARY = {
    "start": "start the service (the deploy's start) unless it runs",
    "stop": "stop the service by its exact path (SIGTERM, wait, SIGKILL), as a deploy does",
    "restart": "stop (exact path) → start, as a deploy does, in one script",
}


def _unlock(deployment: Deployment) -> None:
    deployment.run_again_if_dropped(deployment.unlock, check=False)


def _check_stopped(deployment: Deployment) -> str:
    if deployment.service_alive():
        raise DeployFailed(f"{deployment.component.binary} still runs after the stop")
    return "nothing runs from " + deployment.component.binary


def run_service(
    settings: Settings,
    reporter: Reporter,
    component: str,
    action: str,
    *,
    dry_run: bool = False,
) -> engine.Plan:
    """Returns the plan: with `dry_run` what would run (printed here), else the one that ran."""
    if action not in ACTIONS:
        raise UsageError(f"unknown service action {action!r} (known: {', '.join(ACTIONS)})")
    comp = settings.component(component)
    if comp.switch is not None:  # its health URL and PORT: the port it serves on now
        comp = comp.on_port(comp.switch.ports[0] if dry_run else _live_port(settings, comp))
    deployment = Deployment(settings, comp, reporter, action=action, commit=None, strategy=action)
    plan = engine.Plan(
        f"{action} {comp.name} on {deployment.remote.description}",
        control_steps(deployment, action),
    )
    if dry_run:
        engine.show_plan(plan, reporter, verbose=reporter.verbose)
        return plan
    deployment.refuse_a_foreign_ssh_user()
    reporter.say(plan.title)
    try:
        engine.execute(
            plan.steps,
            reporter,
            interrupts=lambda: engine.interrupts_abort(deployment.cut),
            before_undo=deployment.drop_connection,
            cause=first_line,
        )
    except engine.Undone as undone:
        raise _outcome(deployment, action, undone) from None
    finally:
        deployment.close()
    reporter.summary()
    return plan


def _live_port(settings: Settings, component: Component) -> int:
    from .switch_process import live_port_on_target

    assert component.switch is not None
    with Remote(settings.target_of(component), settings.ssh) as remote:
        return live_port_on_target(
            lambda command: remote.run(command).stdout,
            component.binary,
            component.switch.ports,
            layout.Paths(component.binary).deploy_log,
        )


def _outcome(deployment: Deployment, action: str, undone: engine.Undone) -> GbdeployError:
    error = undone.error
    if isinstance(error, GbdeployError) and not deployment.touched:
        return error  # refused: lock held, frozen, preflight; nothing was changed
    cause = "interrupted" if isinstance(error, KeyboardInterrupt) else message(error)
    hint = f"`gbdeploy logs {deployment.component.name}` shows its log; `gbdeploy status` its state"
    return DeployFailed(f"{action} of {deployment.component.name} failed: {cause}", hint=hint)


# --- exec
def exec_command(component: Component, ssh_user: str, words: list[str]) -> str:
    """`cd DIR && RUN_AS env … CMD…` with every word quoted: the command as the service runs."""
    if not words:
        raise UsageError(
            f"exec {component.name}: no command given",
            hint=f"gbdeploy exec {component.name} -- ls -l   (the command after `--`)",
        )
    env = " ".join(f"{name}={quote(value)}" for name, value in component.env.items())
    parts = [
        run_as_prefix(component, ssh_user),
        f"env {env}" if env else "",
        " ".join(quote(word) for word in words),
    ]
    return f"cd -- {quote(component.directory)} && " + " ".join(p for p in parts if p)


def run_exec(
    settings: Settings,
    reporter: Reporter,
    component: str,
    words: list[str],
    *,
    dry_run: bool = False,
) -> None:
    """Run `words` on the component's target as its service user; its output is shown as it is;
    a non-zero exit is exit 1, naming the command's own exit code."""
    comp = settings.component(component)
    with Remote(settings.target_of(comp), settings.ssh) as remote:
        command = exec_command(comp, remote.user, words)
        if dry_run:
            reporter.plan(f"exec on {remote.description} as {comp.user}", [remote.wrap(command)])
            return
        result = remote.run(command, check=False, timeout=None)
    if result.stdout:
        reporter.write(result.stdout)
    if result.stderr:
        sys.stderr.write(redact(result.stderr, *token_values()))
    if not result.ok:
        shown = " ".join(quote(word) for word in words)
        raise RemoteError(
            f"`{shown}` exited {result.exit_code} on {remote.description} as {comp.user}"
        )
