"""`deploy COMPONENT`: the deploy's steps in order (begin, upload, service, health, finish; seed
splits the service around the upload; switch, for a component with `switch:`, is `switch.py`'s),
its plan for `--dry-run`, and the run of them."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from .. import artifact, provenance
from ..artifact import file_sha256, find_artifact, fingerprint, prefetch_fingerprint
from ..config import Settings
from ..errors import GbdeployError, UsageError
from ..output import Reporter, human_bytes
from . import STRATEGIES, engine, layout
from .deployment import Deployment
from .engine import Step
from .service import service_of
from .switch import SwitchDeployment, refuse_mismatch

__all__ = ["find_artifact", "run_deploy"]


def check_artifact(local: Path) -> Callable[[str], None]:
    """The artifact's local checks (exit 2 when it is no ELF executable); returns the check of
    the target's `uname -m` against its machine type."""
    info = artifact.check(local)
    return lambda uname_m: info.require_machine(uname_m, "the target")


def deployment_steps(
    deployment: Deployment, local: Path, *, machine_of: Callable[[str], None] | None
) -> list[Step]:
    """Every step of a deploy, in order, for the strategy."""
    begin = deployment.begin_step(upload=True, machine_of=machine_of)
    upload = _unless_unchanged(deployment, deployment.upload_step(local))
    if isinstance(deployment, SwitchDeployment):
        return deployment.steps(begin, upload, lambda step: _unless_unchanged(deployment, step))
    health, finish = deployment.health_step(), deployment.finish_step()
    if deployment.strategy == "seed":
        stop = _unless_unchanged(deployment, deployment.service_step("stop", start=False))
        start = _unless_unchanged(deployment, deployment.service_step("start", stop=False))
        return [begin, stop, upload, start, health, finish]
    service = _unless_unchanged(deployment, deployment.service_step("restart"))
    return [begin, upload, service, health, finish]


def deployment_plan(
    deployment: Deployment, local: Path, *, machine_of: Callable[[str], None] | None
) -> engine.Plan:
    """The deploy's plan: its title and steps. A dry run returns it; a deploy executes it."""
    comp = deployment.component
    title = (
        f"deploy {comp.name}: {local} ({_describe_local(local, deployment)}) to {comp.binary} "
        f"on {deployment.remote.description}, strategy {deployment.strategy}, "
        f"restart {service_of(comp).describe()}"
    )
    if deployment.target.container:
        title += f"; every command runs as `{deployment.remote.wrap('COMMAND')}`"
    return engine.Plan(
        title,
        deployment_steps(deployment, local, machine_of=machine_of),
        note=engine.PLAN_NOTE,
    )


def _unless_unchanged(deployment: Deployment, step: Step) -> Step:
    """The step is skipped when the target already has this binary (and not `--force`)."""
    step.skip_when = lambda: "unchanged" if deployment.unchanged else ""
    return step


def run_deploy(
    settings: Settings,
    component: str,
    reporter: Reporter,
    *,
    artifact: str | None = None,
    strategy: str = "staged",
    dry_run: bool = False,
    force: bool = False,
    commit: str | None = None,
    recover: bool = False,
    verbose: bool = False,
    clock: Callable[[], float] = time.time,
    token: str | None = None,
    before_change: Callable[[Deployment], None] | None = None,
) -> engine.Plan:
    """Deploy `artifact` as `component`'s binary on its target (see the module docstring).
    Returns the plan: with --dry-run what would run (printed here), else the one that ran."""
    comp = settings.component(component)
    if recover:
        from .rollback import run_rollback  # rollback builds on this module

        return run_rollback(
            settings,
            component,
            reporter,
            dry_run=dry_run,
            recover=True,
            force=force,
            before_change=before_change,
        )
    if commit is not None and not layout.COMMIT.fullmatch(commit):
        raise UsageError(
            f"--commit {commit!r} is not a commit: letters, digits, `.`, `_`, `+` and `-` only "
            "(no spaces or newlines), at most 100",
            hint="pass the commit the binary was built from, e.g. `--commit $(git rev-parse HEAD)`",
        )
    if strategy not in STRATEGIES:
        raise UsageError(f"unknown strategy {strategy!r} (known: {', '.join(STRATEGIES)})")
    refuse_mismatch(comp, strategy)
    local = find_artifact(settings, comp, artifact)
    deployment = (SwitchDeployment if comp.switch is not None else Deployment)(
        settings,
        comp,
        reporter,
        action="deploy",
        commit=commit,
        strategy=strategy,
        clock=clock,
        token=token,
    )
    deployment.before_change = before_change
    deployment.redeploy = force
    if dry_run:
        if local.is_file():
            deployment.sha256, deployment.size = file_sha256(local), local.stat().st_size
        else:
            deployment.sha256 = "0" * 64
        plan = deployment_plan(deployment, local, machine_of=None)
        engine.show_plan(plan, reporter, verbose=verbose or reporter.verbose)
        return plan
    deployment.refuse_a_foreign_ssh_user()
    machine_of = check_artifact(local)
    deployment.size = local.stat().st_size
    # The artifact is hashed in the background (the CLI started it before loading this module)
    # while the connection opens and the session's far end starts (and, when the upload needs
    # its own channel, that channel's receiver, which waits for the lock).
    prefetch_fingerprint(local)
    try:
        deployment.session.open()
        provenance.record_fields()  # git is asked for the log line while the far end starts
        deployment.prepare_upload(local)
        if isinstance(deployment, SwitchDeployment):
            deployment.find_live()
        deployment.fingerprint = fingerprint(local)
    except GbdeployError:
        deployment.close()
        raise
    deployment.sha256 = deployment.fingerprint.sha256
    reporter.info(
        f"deploy {comp.name}: {local} ({_describe_local(local, deployment)}) → "
        f"{comp.binary} on {deployment.remote.description} (strategy {strategy})"
    )
    plan = deployment_plan(deployment, local, machine_of=machine_of)
    try:
        deployment.execute(plan.steps)
    finally:
        deployment.close()
    reporter.summary()
    built = deployment.commit or f"sha256 {(deployment.sha256 or '?')[:12]}"
    done = "unchanged (it was there already)" if deployment.unchanged else "deployed"
    reporter.say(f"{comp.name} {built} {done} on {deployment.remote.description}, healthy")
    return plan


def _describe_local(local: Path, deployment: Deployment) -> str:
    if not local.is_file():
        return "not built yet"
    return f"{human_bytes(local.stat().st_size)}, sha256 {(deployment.sha256 or '?')[:12]}"
