"""`rollback` (and `deploy --recover`): put a kept release back with the deploy's own steps."""

from __future__ import annotations

from collections.abc import Callable

from ..config import Settings
from ..errors import LockHeld, PreflightError
from ..output import Reporter
from . import engine, layout
from .deployment import Deployment
from .state import (
    Facts,
    KeptRelease,
    choose_release,
    describe_journal,
    holder_alive,
    inspect_command,
    parse_facts,
    release_name,
    running_release,
)
from .switch import SwitchDeployment


def run_rollback(
    settings: Settings,
    component: str,
    reporter: Reporter,
    *,
    dry_run: bool = False,
    to: str | None = None,
    recover: bool = False,
    before_change: Callable[[Deployment], None] | None = None,
    force: bool = False,
    confirm_change: Callable[[str], None] | None = None,
) -> engine.Plan:
    """Put a kept release back (the previous healthy one, or the one with commit `to`), restart
    it and check health; undone on failure. `recover`: first take over the lock of a deploy that
    was killed (never one whose deploy still runs here, unless `force`; a service script it left
    running on the target is waited for), and put the last healthy release back.
    `confirm_change` is given the change ("roll back botserver from 9f116bd to 17c42e4 on …")
    once it is known, before anything is changed, and may stop it by raising."""
    comp = settings.component(component)
    if comp.switch is not None:  # started beside on the idle port, Caddy switched
        deployment: Deployment = SwitchDeployment(
            settings, comp, reporter, action="rollback", commit=None, strategy="switch"
        )
    else:
        deployment = Deployment(
            settings, comp, reporter, action="rollback", commit=None, strategy="rollback"
        )
    deployment.before_change = before_change
    deployment.refuse_a_foreign_ssh_user()
    try:
        facts = parse_facts(deployment.run(inspect_command(deployment.paths)))
        if recover:
            alive = holder_alive(facts.holder)
            if alive and not force:
                deployment.facts = facts
                held = deployment.lock_held()
                raise LockHeld(
                    f"{held.message}\n  the deploy holding it still runs on this machine (pid "
                    f"{alive}): --recover does not take over a live deploy's lock",
                    hint=f"wait for it, or stop it (`kill {alive}`); `--recover --force` takes "
                    "over anyway",
                )
            deployment.force = force
            if facts.holder:
                deployment.steal = str(facts.holder.get("token", "")) or None
            if facts.held_age is not None and not deployment.steal:
                deployment.steal = layout.HOLDERLESS
            if comp.switch is not None:  # even unlocked: two processes may run, one behind Caddy
                return _recover_switch(deployment, facts, dry_run=dry_run)
            if facts.held_age is None and not facts.journal and deployment.service_alive():
                reporter.say(
                    f"recover {comp.name}: nothing to recover (no lock, no interrupted deploy); "
                    f"{running_release(facts)} runs, left as it is"
                )
                return engine.Plan(f"recover {comp.name}: nothing to recover", [])
            release = facts.releases[-1] if facts.releases else None
            if release is None:
                if deployment.steal and not dry_run:
                    if "live-session" in deployment.run(
                        layout.steal_command(deployment.paths, deployment.steal, force=force)
                    ):
                        deployment.facts = facts
                        raise LockHeld(
                            f"{deployment.lock_held().message}\n  the deploy holding it is still "
                            "connected to the target: --recover does not take it over",
                            hint="wait for it to finish, or `--recover --force`",
                        )
                    reporter.say(
                        f"recover {comp.name}: the stale lock {deployment.paths.lock} removed"
                    )
                raise PreflightError(
                    f"{comp.name}: no healthy release is kept on the target to recover to"
                    + ("; the stale lock was removed" if deployment.steal else ""),
                    hint=f"deploy a known-good build: `gbdeploy deploy {comp.name} --force`",
                )
            found = describe_journal(facts.journal) if facts.journal else "no interrupted deploy"
            reporter.say(f"recover {comp.name}: found {found}")
        else:
            release = choose_release(facts, to)
        deployment.release, deployment.sha256, deployment.commit = (
            release,
            release.sha256,
            release.commit,
        )
        begin = deployment.begin_step(upload=False, machine_of=None)
        if isinstance(deployment, SwitchDeployment):
            if not dry_run:
                deployment.find_live()
            steps = deployment.steps(begin, None, lambda step: step)
        else:
            steps = [
                begin,
                deployment.service_step("restart", source=deployment.paths.release(release.sha256)),
                deployment.health_step(),
                deployment.finish_step(),
            ]
        title = (
            f"{'recover' if recover else 'rollback'} {comp.name} from {running_release(facts)} "
            f"to release {release.commit or 'unknown'} (sha256 {release.sha256[:12]}) on "
            f"{deployment.remote.description}"
        )
        plan = engine.Plan(title, steps, note=engine.PLAN_NOTE)
        if dry_run:
            engine.show_plan(plan, reporter, verbose=reporter.verbose)
            return plan
        if confirm_change is not None:
            confirm_change(
                f"{'recover' if recover else 'roll back'} {comp.name} from "
                f"{release_name(facts.current, facts.releases)} to "
                f"{release_name(release.sha256, facts.releases)} on {deployment.remote.description}"
            )
        reporter.info(title)
        deployment.execute(plan.steps)
    finally:
        deployment.close()
    reporter.summary()
    reporter.say(
        f"{comp.name} {release_name(release.sha256, [release])} runs again on "
        f"{deployment.remote.description}, healthy"
    )
    reporter.say(_verify_hint(comp.name, release))
    return plan


def _recover_switch(deployment: Deployment, facts: Facts, *, dry_run: bool) -> engine.Plan:
    """`--recover` of a switch component: whatever the journal says, the port Caddy runs keeps
    its process, and everything else is made to agree with it (see `switch.recover_step`)."""
    assert isinstance(deployment, SwitchDeployment)
    reporter = deployment.reporter
    found = describe_journal(facts.journal) if facts.journal else "no interrupted deploy"
    steps = [
        deployment.begin_step(upload=False, machine_of=None),
        deployment.recover_step(),
        deployment.finish_step(),
    ]
    title = f"recover {deployment.base.name} on {deployment.remote.description}: found {found}"
    plan = engine.Plan(title, steps)
    if dry_run:
        engine.show_plan(plan, reporter, verbose=reporter.verbose)
        return plan
    reporter.info(title)
    deployment.execute(plan.steps)
    reporter.summary()
    reporter.say(
        f"{deployment.base.name} serves on port {deployment.live} behind Caddy, healthy, "
        "alone (one process)"
    )
    return plan


def _verify_hint(name: str, release: KeptRelease) -> str:
    """`verify` alone expects the submodule's HEAD, which a rollback just took off the target."""
    if release.commit:
        return f"check it with: gbdeploy verify {name} --commit {release.commit}"
    return f"check it with: gbdeploy status {name} (this release recorded no commit to verify)"
