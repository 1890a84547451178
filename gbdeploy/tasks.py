"""gbdeploy's commands, the same under `gbdeploy` and under `invoke` (via a root tasks.py).

Each task is a thin shell: parse options, load settings, call the module that does the work.
Errors from the `errors` tree become `invoke.Exit` with their exit code and a redacted message.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from invoke import Collection, Context, Exit, UnexpectedExit

from .cli import (
    command_after_dashes,
    confirm,
    defaults_notice,
    deploy_question,
    describe_target,
    gbdeploy_config,
    task,
)
from .config import Settings, token_values
from .config_layers import load_settings
from .errors import GbdeployError, OperationFailed, UsageError, internal_error, redact
from .output import Reporter

F = TypeVar("F", bound=Callable[..., Any])


def reporting_errors(func: F) -> F:
    """Turn gbdeploy errors into `Exit(code)` with the message (token redacted) on stderr, and
    any other exception into the internal-error message, exit 1: never a bare traceback."""

    @functools.wraps(func)
    def wrapper(c: Context, *args: Any, **kwargs: Any) -> Any:
        secrets = token_values()
        try:
            return func(c, *args, **kwargs)
        except GbdeployError as error:
            raise Exit(
                redact(f"gbdeploy: error: {error}", *secrets), code=error.exit_code
            ) from None
        except KeyboardInterrupt:
            raise Exit("gbdeploy: interrupted", code=130) from None
        except (Exit, UnexpectedExit):
            raise
        except Exception as error:
            raise Exit(internal_error(error, *secrets), code=1) from None

    return wrapper  # type: ignore[return-value]


def settings(c: Context) -> Settings:
    return load_settings(gbdeploy_config(c.config))


def production(c: Context) -> Settings:
    """Settings for a command that reaches a host or the forge: with no project file, it says
    which built-in production defaults it aims at."""
    config = gbdeploy_config(c.config)
    loaded = load_settings(config)
    defaults_notice(config, loaded)
    return loaded


def reporter() -> Reporter:
    return Reporter(stream=sys.stdout, secrets=token_values())


NUMBER_LIMIT = 10**9  # above any timeout in seconds or run id a command takes


def number(value: str | float | None, option: str, kind: type[float] | type[int] = float) -> Any:
    """Invoke passes options whose default is None as text: parse them, or say which is wrong."""
    if value is None:
        return None
    try:
        parsed = kind(value)
    except (ValueError, OverflowError):
        raise UsageError(f"--{option} expects a number, got {value!r}") from None
    if not 0 <= parsed <= NUMBER_LIMIT:  # also refuses nan and inf
        raise UsageError(f"--{option} expects a number from 0 to {NUMBER_LIMIT}, got {value!r}")
    return parsed


@task(
    help={
        "component": "component to release, e.g. botserver",
        "dry_run": "print every git operation and HTTP request, change nothing",
        "no_wait": "stop after the pushes and print the root commit",
        "no_verify": "do not verify the deployed binary after CI",
        "dispatch": "dispatch the component's workflow instead of waiting for the push run",
        "timeout": "seconds to wait for the CI run (default: release.timeout)",
        "root": "the root repository (default: the one holding gbdeploy.yaml, or the current one)",
    }
)
@reporting_errors
def release(
    c: Context,
    component: str,
    dry_run: bool = False,
    no_wait: bool = False,
    no_verify: bool = False,
    dispatch: bool = False,
    timeout: float | None = None,
    root: str | None = None,
) -> None:
    """Push a submodule, commit its pointer, push the root, wait for CI, verify the deploy."""
    from . import release as release_module
    from .events import notifying_release

    loaded, out = production(c), reporter()
    with notifying_release(loaded, component, out, root=root, dry_run=dry_run, no_wait=no_wait):
        release_module.run_release(
            loaded,
            component,
            out,
            dry_run=dry_run,
            no_wait=no_wait,
            no_verify=no_verify,
            dispatch=dispatch,
            timeout=number(timeout, "timeout"),
            root=root,
        )


@task(
    help={
        "component": "component to deploy",
        "artifact": "the built binary to deploy (default: the component's `artifact`)",
        "strategy": "staged (upload, then swap; default), seed (stop, copy, start) or switch "
        "(a component with `switch:`: start beside on the idle port, switch Caddy, stop the old)",
        "dry_run": "print the plan of remote commands, change nothing",
        "force": "upload and restart even when the target already has this binary",
        "commit": "the commit this binary was built from (recorded in the lock and deploy log)",
        "yes": "do not ask for confirmation (never asked without a terminal, as in CI)",
        "recover": "after a deploy that was killed: take over its lock, put the last healthy "
        "release back and check its health",
    }
)
@reporting_errors
def deploy(
    c: Context,
    component: str,
    artifact: str | None = None,
    strategy: str = "staged",
    dry_run: bool = False,
    force: bool = False,
    commit: str | None = None,
    yes: bool = False,
    recover: bool = False,
) -> None:
    """Deploy a binary to its target over SSH: lock, upload, stop, swap, chown, start, health."""
    from . import artifact as artifact_module
    from . import deploy as deploy_module

    loaded = production(c)
    if not dry_run:
        confirm(deploy_question(loaded, component, artifact, commit, recover), yes=yes)
        if not recover and component in loaded.components:
            found = artifact_module.find_artifact(loaded, loaded.component(component), artifact)
            artifact_module.prefetch_fingerprint(found)  # while the ssh machinery loads
    from .events import watching

    out = reporter()
    action = "rollback" if recover else "deploy"
    with watching(
        loaded, component, out, action=action, strategy=strategy, commit=commit, dry_run=dry_run
    ) as watch:
        deploy_module.run_deploy(
            loaded,
            component,
            out,
            artifact=artifact,
            strategy=strategy,
            dry_run=dry_run,
            force=force,
            commit=commit,
            recover=recover,
            before_change=watch.before_change,
        )


@task(
    help={
        "component": "component to check",
        "commit": "expected commit (default: the submodule's HEAD in the root repo)",
        "since": "the binary must be newer than this (ISO time, e.g. the CI run's start)",
        "json": "print the checks as a JSON list of {check, ok, saw}",
    }
)
@reporting_errors
def verify(
    c: Context,
    component: str,
    commit: str | None = None,
    since: str | None = None,
    json: bool = False,
) -> None:
    """Check that the deployed binary is the expected one and the service is healthy."""
    from . import verify as verify_module

    verify_module.run_verify(
        production(c), component, reporter(), commit=commit, since=since, as_json=json
    )


@task(
    help={
        "component": "component to roll back",
        "dry_run": "print the plan, change nothing",
        "yes": "do not ask for confirmation (never asked without a terminal, as in CI)",
        "to": "the kept release with this commit (default: the previous healthy one)",
    }
)
@reporting_errors
def rollback(
    c: Context, component: str, dry_run: bool = False, yes: bool = False, to: str | None = None
) -> None:
    """Put the previous healthy release (or the kept one with --to COMMIT) back, restart it and
    check its health."""
    from . import deploy as deploy_module
    from .events import watching

    loaded = production(c)
    out = reporter()
    with watching(loaded, component, out, action="rollback", dry_run=dry_run) as watch:
        deploy_module.run_rollback(
            loaded,
            component,
            out,
            dry_run=dry_run,
            to=to,
            before_change=watch.before_change,
            confirm_change=lambda change: confirm(f"{change}?", yes=yes),
        )


@task(
    help={
        "component": "whose deploys to list",
        "limit": "show only the newest N (default: all)",
        "json": "print JSON: {component, target, running_sha256, entries: [...]}",
    }
)
@reporting_errors
def history(c: Context, component: str, limit: int | None = None, json: bool = False) -> None:
    """The target's deploys and rollbacks, newest first, and which one runs now."""
    from . import history as history_module

    count = number(limit, "limit", int)
    if count == 0:
        raise UsageError("--limit must be at least 1 (without it, every entry is shown)")
    history_module.run_history(production(c), reporter(), component, limit=count, as_json=json)


@task(
    help={
        "component": "whose log to show",
        "lines": "how many of the last lines (default 20)",
        "follow": "keep printing what is appended, until Ctrl-C",
        "since": "only lines from this time on: ISO time (UTC) or an age such as 30m, 2h, 1d",
        "grep": "only lines matching this extended regular expression (grep -E on the target)",
        "dry_run": "print the remote command, run nothing",
    }
)
@reporting_errors
def logs(
    c: Context,
    component: str,
    lines: int = 20,
    follow: bool = False,
    since: str | None = None,
    grep: str | None = None,
    dry_run: bool = False,
) -> None:
    """The component's log on its target (its `log` file, or its systemd unit's journal)."""
    from . import logs as logs_module

    count = number(lines, "lines", int)
    logs_module.run_logs(
        production(c),
        reporter(),
        component,
        lines=count,
        follow=follow,
        since=since,
        grep=grep,
        dry_run=dry_run,
    )


@task(
    name="config",
    help={
        "json": "print JSON: {files, token, values: {KEY: {value, source}}}",
        "key": "only this key, or the keys under it (forge, components.botserver)",
    },
)
@reporting_errors
def config_(c: Context, json: bool = False, key: str | None = None) -> None:
    """The effective configuration, and the file or variable that gave each value."""
    from . import config_view

    config_view.run_config(gbdeploy_config(c.config), reporter(), as_json_output=json, key=key)


@task(
    help={
        "component": "only this component's runs (in the repository its workflow runs in)",
        "limit": "how many runs (default 10)",
        "json": "print the runs as a JSON list",
    }
)
@reporting_errors
def runs(c: Context, component: str | None = None, limit: int = 10, json: bool = False) -> None:
    """List recent CI runs of the root repository (or of a component's workflow)."""
    from . import runs as runs_module

    runs_module.run_runs(production(c), reporter(), component=component, limit=limit, as_json=json)


@task(
    help={
        "run_id": "the run's id (as in the API and in `gbdeploy runs`)",
        "sha": "wait for the run of this root commit instead",
        "timeout": "seconds to wait (default: release.timeout)",
        "component": "look in the repository this component's workflow runs in",
    }
)
@reporting_errors
def wait(
    c: Context,
    run_id: int | None = None,
    sha: str | None = None,
    timeout: float | None = None,
    component: str | None = None,
) -> None:
    """Wait for a CI run to finish; exit 3 if it fails, 4 on timeout."""
    from . import runs as runs_module

    runs_module.run_wait(
        production(c),
        reporter(),
        run_id=number(run_id, "run-id", int),
        sha=sha,
        timeout=number(timeout, "timeout"),
        component=component,
    )


@task(help={"component": "only this component (default: all)", "json": "print JSON"})
@reporting_errors
def status(c: Context, component: str | None = None, json: bool = False) -> None:
    """Deployed binary, process, health, lock and latest CI run of each component; exit 1 when
    one is unhealthy, not running, locked, left a journal or runs a binary it did not record."""
    from . import deploy as deploy_module

    problems = deploy_module.run_status(
        production(c), reporter(), component=component, as_json=json
    )
    if problems:
        raise OperationFailed(
            "status: " + "; ".join(problems),
            hint="`gbdeploy logs COMPONENT` shows why a service is down; a lock or journal left "
            "by a killed deploy: `gbdeploy deploy COMPONENT --recover`",
        )


@task(help={"fix": "repair what is safe to repair, and print what changed", "json": "print JSON"})
@reporting_errors
def doctor(c: Context, fix: bool = False, json: bool = False) -> None:
    """Check the production invariants of the operations guide (read-only unless --fix)."""
    from . import doctor as doctor_module

    doctor_module.run_doctor(settings(c), reporter(), fix=fix, as_json=json)


@task(help={"out": "directory to write into (default: <root>/.forgejo/workflows)"})
@reporting_errors
def workflows(c: Context, out: str | None = None) -> None:
    """Render the Forgejo workflow file of each configured component."""
    from . import workflows as workflows_module

    workflows_module.run_workflows(settings(c), reporter(), out=out)


@task(
    help={
        "dry_run": "print what would be removed, remove nothing",
        "max_age_days": "remove cache entries not used for this many days",
        "max_size_gb": "then trim each cache to this size, oldest first",
    }
)
@reporting_errors
def maintain(
    c: Context,
    dry_run: bool = False,
    max_age_days: int | None = None,
    max_size_gb: float | None = None,
) -> None:
    """Runner maintenance: trim the sccache and cargo registry caches by age and size."""
    from . import maintenance

    maintenance.run_maintain(
        settings(c), reporter(), dry_run=dry_run, max_age_days=max_age_days, max_size_gb=max_size_gb
    )


@task(
    help={
        "keep": "leave the sandbox running and print how to use it by hand",
        "placement": "where botserver's workflow lives: root (gb, default) or component",
        "container": "botserver runs in a container behind the ssh host, entered with sudo incus",
        "switch": "instead: zero-downtime deploys (--strategy switch) behind a real Caddy, "
        "under load",
    }
)
@reporting_errors
def demo(
    c: Context,
    keep: bool = False,
    placement: str = "root",
    container: bool = False,
    switch: bool = False,
) -> None:
    """A real release of botserver against a local sandbox (sshd, git remotes, Forgejo emulator)."""
    try:
        from gbdeploy_sandbox import sandbox
    except ImportError:
        raise UsageError(
            "the demo needs the sandbox distribution, which is not installed",
            hint="from a clone of gbdeploy: pip install ./sandbox  (or run: bash .ci/setup)",
        ) from None
    if placement not in ("root", "component"):
        raise UsageError(f"--placement: expected root or component, got {placement!r}")
    if switch:
        from gbdeploy_sandbox.switch_demo import run_switch_demo

        run_switch_demo(reporter())
        return
    sandbox.run_demo(reporter(), keep=keep, placement=placement, container=container)


@task(
    positional=["component", "action"],
    help={
        "component": "the component whose deploys to freeze",
        "action": "acquire (freeze, with -m), release (lift it) or status",
        "message": "acquire: why, and until when (shown to whoever deploys next)",
        "dry_run": "print the remote command, change nothing",
    },
)
@reporting_errors
def lock(
    c: Context, component: str, action: str, message: str | None = None, dry_run: bool = False
) -> None:
    """Freeze a component's deploys with a reason, lift the freeze, or show it.

    acquire -m MSG freezes; release lifts it; status shows it. While frozen, deploy, rollback,
    start, stop and restart are refused (exit 1) with the reason."""
    from . import freeze

    freeze.run_lock(production(c), reporter(), component, action, message=message, dry_run=dry_run)


def _service(c: Context, component: str, action: str, dry_run: bool, yes: bool) -> None:
    from . import service_control

    loaded = production(c)
    if not dry_run and action != "start":
        confirm(f"{action} {component} on {describe_target(loaded, component)}?", yes=yes)
    service_control.run_service(loaded, reporter(), component, action, dry_run=dry_run)


SERVICE_HELP = {
    "component": "the component whose service to control",
    "dry_run": "print the plan of remote commands, change nothing",
    "yes": "do not ask for confirmation (never asked without a terminal, as in CI)",
}


@task(help=SERVICE_HELP)
@reporting_errors
def start(c: Context, component: str, dry_run: bool = False, yes: bool = False) -> None:
    """Start the service (as a deploy starts it) under the deploy lock, and check its health."""
    _service(c, component, "start", dry_run, yes)


@task(help=SERVICE_HELP)
@reporting_errors
def stop(c: Context, component: str, dry_run: bool = False, yes: bool = False) -> None:
    """Stop the service (as a deploy stops it: by its exact path) under the deploy lock."""
    _service(c, component, "stop", dry_run, yes)


@task(help=SERVICE_HELP)
@reporting_errors
def restart(c: Context, component: str, dry_run: bool = False, yes: bool = False) -> None:
    """Stop and start the service (as a deploy does) under the deploy lock; check its health."""
    _service(c, component, "restart", dry_run, yes)


@task(
    name="exec",
    help={
        "component": "run on this component's target, as its service user",
        "dry_run": "print the remote command, run nothing",
    },
)
@reporting_errors
def exec_(c: Context, component: str, dry_run: bool = False) -> None:
    """Run a command on the target as the service user: exec COMPONENT -- CMD….

    The command runs in the binary's directory with the component's env, every word quoted:
    gbdeploy exec botserver -- ls -l. Its non-zero exit is exit 1."""
    from . import service_control

    service_control.run_exec(
        production(c), reporter(), component, command_after_dashes(), dry_run=dry_run
    )


namespace = Collection(
    release, deploy, verify, rollback, runs, wait, status, doctor, workflows, maintain, demo
)
namespace.add_task(history)
namespace.add_task(logs)
namespace.add_task(config_)
for _command in (lock, start, stop, restart, exec_):
    namespace.add_task(_command)
